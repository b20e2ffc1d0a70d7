# istio-proxy-debug: `make up` to bring the stack up, `make test` to test the program.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
# The lab (Pulumi.lab.yaml): a kind cluster on this machine's Docker. STACK=dev is the walkthrough's own lab.
STACK ?= lab
PULUMI_VERSION ?= 3.274.0
# The kind CLI `make up` installs when a kind stack needs it and none is on PATH; its release's own checksums
# (kind-<os>-<arch>.sha256sum). The node image the stack pins (components/kind_cluster.py) is this release's.
KIND_VERSION ?= v0.32.0
KIND_SHA256_linux_amd64 := 50030de23cf40a18505f20426f6a8506bedf13c6e509244bd1fa9463721b0f54
KIND_SHA256_linux_arm64 := b92cd615e97585de8ddade28ed5cd7feb4248d717c233eea5b03c37298900f5d
KIND_SHA256_darwin_amd64 := 295ac6d0d634c9819c9907df45e3017d1f13166bd13c3404c45e79f7faa47498
KIND_SHA256_darwin_arm64 := dca67911095a110c2b5c36e26df6cac860c602033e456c0db47be498cdef1ebb
KIND_URL ?= https://kind.sigs.k8s.io/dl
# Tools `make up` installs go here (kind), and the program's commands find them on PATH.
LOCAL_BIN := $(HOME)/.local/bin
export PATH := $(LOCAL_BIN):$(PATH)
# A stack without workDir (the lab's file) gets this one on first `make up`.
LAB_WORK_DIR ?= $(HOME)/istio-proxy-debug-$(STACK)
# A local file backend: no Pulumi account needed. State lives outside the checkout, so a fresh clone
# finds the stacks again.
export PULUMI_BACKEND_URL ?= file://$(HOME)/.pulumi-istio-proxy-debug
PULUMI := $(shell command -v pulumi 2>/dev/null || echo $(HOME)/.pulumi/bin/pulumi)
STACK_FILE := Pulumi.$(STACK).yaml
USES_KIND := $(shell grep -qs '^ *istio-proxy-debug:cluster: *kind' $(STACK_FILE) && echo yes)
# The lab's only secret is its own kind cluster's kubeconfig (also in workDir, unencrypted, as kind writes it):
# no passphrase prompt unless you set one.
ifeq ($(USES_KIND),yes)
ifeq ($(origin PULUMI_CONFIG_PASSPHRASE)$(origin PULUMI_CONFIG_PASSPHRASE_FILE),undefinedundefined)
export PULUMI_CONFIG_PASSPHRASE :=
endif
endif
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Debian packages the tests drive for real: tool:package.
TEST_TOOLS := lldb:lldb lldb-server:lldb iptables:iptables containerd:containerd shellcheck:shellcheck \
	ip:iproute2 unshare:util-linux nsenter:util-linux git:git readelf:binutils objcopy:binutils \
	cc:gcc g++:g++ patchelf:patchelf setpriv:util-linux ss:iproute2 pgrep:procps faketime:faketime \
	ctr:containerd docker-registry:docker-registry skopeo:skopeo flock:util-linux \
	clang++:clang ld.lld:lld llvm-dwp:llvm curl:curl pigz:pigz sudo:sudo \
	dockerd:docker.io debootstrap:debootstrap openssl:openssl strace:strace ssh-keygen:openssh-client \
	tini-static:tini

.PHONY: help up preview preview-policy destroy test lint bench deps system-deps lldb-clients pulumi-cli kind-cli \
	docker-check stack-select stack toolchain config-docs

help:
	@echo "make up       venv, dependencies, Pulumi CLI, kind, the '$(STACK)' stack, then pulumi up (STACK=dev: the walkthrough's lab)"
	@echo "make test     install what the tests need (Debian and PyPI packages, the toolchain), then run them"
	@echo "make toolchain  build the Pulumi CLI, providers and a Kubernetes control plane from Go modules (cached)"
	@echo "make preview  pulumi preview --diff of the selected stack     (STACK=name to choose)"
	@echo "make preview-policy  the same, checked by the policy pack (policy/)"
	@echo "make destroy  pulumi destroy (keeps the source, the bazel cache and the registry data)"
	@echo "make stack NAME=alice [WORK_DIR=…]  a developer stack of your own, from the dev stack's values"
	@echo "make lint     ruff, and Pulumi.yaml and the generated tables of docs/ checked against the code"
	@echo "make config-docs  write Pulumi.yaml's config: block and the generated tables of docs/ (settings, outputs, messages)"
	@echo "make bench    the benchmarks under bench/"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) is not installed: install Python 3.11 or later" \
		"(Debian/Ubuntu: apt-get install python3 python3-venv)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "make: '$(PYTHON) -m venv' failed: install Python's venv module" \
		"(Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
	@$(VENV)/bin/pip install -q -r requirements-dev.txt || { echo "make: pip could not install" \
		"requirements-dev.txt (see above): check your network or PyPI mirror (PIP_INDEX_URL)" >&2; exit 1; }
	touch $@

deps: $(VENV)/.installed

system-deps:
	@missing=$$(for pair in $(TEST_TOOLS); do command -v "$${pair%%:*}" >/dev/null || echo "$${pair#*:}"; done | sort -u); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Debian's docker-registry starts a registry on :5000 where systemd runs; the tests start their own.
	@if [ -d /run/systemd/system ] && systemctl is-active -q docker-registry 2>/dev/null; then \
		$(SUDO) systemctl disable --now docker-registry; fi

# The LLVM releases VS Code's CodeLLDB bundles (1.11: 19, 1.12: 21) besides Debian's lldb 14: the tests and
# bench/attach_latency.py also drive Debian's lldb 19 and 22, unpacked with their libraries into .cache (installed,
# python3-lldb-<major> would replace lldb 14's). libipt2, which lldb 14 does not need, goes with them: the tests also
# run lldb-dap 19 in the stack's debugger container, whose image has lldb 14's libraries only.
LLDB_CLIENTS := 19 22
lldb_packages = lldb-$(1) liblldb-$(1) python3-lldb-$(1) libllvm$(1) libclang-cpp$(1) libipt2
lldb-clients: $(foreach major,$(LLDB_CLIENTS),.cache/lldb-$(major)/.unpacked)

.cache/lldb-%/.unpacked: | system-deps
	rm -rf .cache/lldb-$* && mkdir -p .cache/lldb-$*/debs
	cd .cache/lldb-$*/debs && { apt-get download -qq $(call lldb_packages,$*) || \
		{ $(SUDO) apt-get update -qq && apt-get download -qq $(call lldb_packages,$*); }; }
	for deb in .cache/lldb-$*/debs/*.deb; do dpkg-deb -x "$$deb" .cache/lldb-$*/root; done
	rm -rf .cache/lldb-$*/debs
	touch $@

# The Pulumi CLI, its Python language host, the provider plugins and a Kubernetes control plane, built with Go
# from the Go module proxy at pinned versions (tools/toolchain.sh), once per machine: the tests run the user's
# commands on them. `make up` installs the official CLI instead.
toolchain:
	@command -v go >/dev/null || { echo "make: the toolchain is built with Go 1.26 or later, and there is no go" \
		"command: install Go (https://go.dev/dl/)" >&2; exit 1; }
	bash tools/toolchain.sh

test: system-deps deps lldb-clients toolchain
	$(VENV)/bin/python -m pytest -q

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m tools.config_docs --check

# Pulumi.yaml's config: block from components/settings.py, and the generated blocks of docs/: the settings and outputs
# tables of docs/configuration.md, the messages of docs/troubleshooting.md (tools/config_docs.py).
config-docs: deps
	$(VENV)/bin/python -m tools.config_docs

bench: system-deps deps lldb-clients toolchain
	$(VENV)/bin/python bench/evaluate.py
	$(VENV)/bin/python bench/image_delta.py
	$(VENV)/bin/python bench/debugger_layer.py
	$(VENV)/bin/python bench/dwp_support.py
	$(VENV)/bin/python bench/prebuilt_fetch.py --rate 125
	$(VENV)/bin/python bench/toolchain_build.py
	$(VENV)/bin/python bench/engine_cycle.py

pulumi-cli:
	@[ -x "$(PULUMI)" ] || { echo "installing the Pulumi CLI $(PULUMI_VERSION) into ~/.pulumi"; \
		command -v curl >/dev/null || { echo "make: the Pulumi CLI is not installed, and curl (to install it) is" \
			"missing: install curl, or the Pulumi CLI from https://www.pulumi.com/docs/install/" >&2; exit 1; }; \
		installer=$$(curl -fsSL https://get.pulumi.com) && sh -c "$$installer" -s --version $(PULUMI_VERSION) \
			--no-edit-path || { echo "make: could not install the Pulumi CLI $(PULUMI_VERSION) (see above): install" \
			"it from https://www.pulumi.com/docs/install/ and run make up again" >&2; exit 1; }; }

# kind, for a stack with `cluster: kind`, when none is on PATH: the pinned release into ~/.local/bin, checked
# against its checksum before it is made executable.
kind-cli:
ifeq ($(USES_KIND),yes)
	@command -v kind >/dev/null || bash tools/install-kind.sh "$(KIND_VERSION)" "$(KIND_URL)" "$(LOCAL_BIN)" \
		"$(KIND_SHA256_linux_amd64)" "$(KIND_SHA256_linux_arm64)" "$(KIND_SHA256_darwin_amd64)" \
		"$(KIND_SHA256_darwin_arm64)"
endif

# The lab runs on Docker: say so before Pulumi starts rather than halfway through.
docker-check:
ifeq ($(USES_KIND),yes)
	@command -v docker >/dev/null || { echo "make: the $(STACK) stack needs Docker (20.10 or later), and there is" \
		"no docker command: install Docker Engine or Docker Desktop (https://docs.docker.com/get-docker/)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make: Docker does not answer ('docker info' fails): start Docker, or" \
		"add yourself to the docker group (then log in again)" >&2; exit 1; }
endif

stack-select: deps pulumi-cli
	@$(PULUMI) stack select $(STACK) 2>/dev/null || \
		$(PULUMI) stack init $(STACK) --secrets-provider passphrase
	@# A host stack whose file has no workDir (the lab's) gets one of this machine's on first use.
	@if ! grep -qs 'istio-proxy-debug:workDir:' $(STACK_FILE) && ! grep -qs 'istio-proxy-debug:placement: *cluster' \
		$(STACK_FILE); then echo "setting workDir to $(LAB_WORK_DIR) (pulumi config set workDir <folder> to choose another)"; \
		$(PULUMI) config set --stack $(STACK) workDir "$(LAB_WORK_DIR)"; fi

# A developer's own stack: its config file with values no other stack file uses, then the stack itself
# (passphrase secrets, the file backend). Afterwards: STACK=$(NAME) make up.
WORK_DIR ?= $(HOME)/istio-testing-$(NAME)
PLACEMENT ?= host
stack: deps pulumi-cli
	@[ -n "$(NAME)" ] || { echo "usage: make stack NAME=<your name> [WORK_DIR=/abs/folder] [PLACEMENT=cluster]"; exit 2; }
	$(VENV)/bin/python tools/new_stack.py "$(NAME)" --placement "$(PLACEMENT)" \
		$(if $(filter cluster,$(PLACEMENT)),,--work-dir "$(WORK_DIR)")
	$(PULUMI) stack init "$(NAME)" --secrets-provider passphrase
	@echo "now: STACK=$(NAME) make preview   (set registryHost, nodes, sshPrivateKey with pulumi config set --stack $(NAME))"

up: docker-check kind-cli stack-select
	$(PULUMI) up --stack $(STACK)

preview: stack-select
	$(PULUMI) preview --diff --stack $(STACK)

# The policy pack (policy/) on a preview: every resource against the project's safety rules. The CLI makes
# policy/venv from policy/requirements.txt on first use.
preview-policy: stack-select
	$(PULUMI) preview --diff --stack $(STACK) --policy-pack policy

destroy: kind-cli stack-select
	$(PULUMI) destroy --stack $(STACK)
