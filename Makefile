# istio-proxy-debug: `make up` to bring the stack up, `make test` to test the program.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
STACK ?= dev
PULUMI_VERSION ?= 3.272.0
# A local file backend: no Pulumi account needed. State lives outside the checkout, so a fresh clone
# finds the stacks again.
export PULUMI_BACKEND_URL ?= file://$(HOME)/.pulumi-istio-proxy-debug
PULUMI := $(shell command -v pulumi 2>/dev/null || echo $(HOME)/.pulumi/bin/pulumi)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Debian packages the tests drive for real: tool:package.
TEST_TOOLS := lldb:lldb lldb-server:lldb iptables:iptables containerd:containerd shellcheck:shellcheck \
	ip:iproute2 unshare:util-linux nsenter:util-linux git:git readelf:binutils objcopy:binutils \
	cc:gcc g++:g++ patchelf:patchelf setpriv:util-linux ss:iproute2 pgrep:procps faketime:faketime \
	ctr:containerd docker-registry:docker-registry skopeo:skopeo flock:util-linux \
	clang++:clang ld.lld:lld llvm-dwp:llvm curl:curl pigz:pigz sudo:sudo \
	dockerd:docker.io debootstrap:debootstrap

.PHONY: help up preview preview-policy destroy test lint bench deps system-deps lldb-clients pulumi-cli stack-select stack

help:
	@echo "make up       venv, dependencies, file backend, the '$(STACK)' stack, then pulumi up"
	@echo "make test     install what the tests need (Debian and PyPI packages), then run them"
	@echo "make preview  pulumi preview --diff of the selected stack     (STACK=name to choose)"
	@echo "make preview-policy  the same, checked by the policy pack (policy/)"
	@echo "make destroy  pulumi destroy (keeps the source, the bazel cache and the registry data)"
	@echo "make stack NAME=alice [WORK_DIR=…]  a developer stack of your own, from the dev stack's values"
	@echo "make lint     ruff;  make bench  the benchmarks under bench/"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-dev.txt
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
# python3-lldb-<major> would replace lldb 14's).
LLDB_CLIENTS := 19 22
lldb_packages = lldb-$(1) liblldb-$(1) python3-lldb-$(1) libllvm$(1) libclang-cpp$(1)
lldb-clients: $(foreach major,$(LLDB_CLIENTS),.cache/lldb-$(major)/.unpacked)

.cache/lldb-%/.unpacked: | system-deps
	rm -rf .cache/lldb-$* && mkdir -p .cache/lldb-$*/debs
	cd .cache/lldb-$*/debs && { apt-get download -qq $(call lldb_packages,$*) || \
		{ $(SUDO) apt-get update -qq && apt-get download -qq $(call lldb_packages,$*); }; }
	for deb in .cache/lldb-$*/debs/*.deb; do dpkg-deb -x "$$deb" .cache/lldb-$*/root; done
	rm -rf .cache/lldb-$*/debs
	touch $@

test: system-deps deps lldb-clients
	$(VENV)/bin/python -m pytest -q

lint: deps
	$(VENV)/bin/ruff check .

bench: system-deps deps lldb-clients
	$(VENV)/bin/python bench/evaluate.py
	$(VENV)/bin/python bench/image_delta.py
	$(VENV)/bin/python bench/debugger_layer.py
	$(VENV)/bin/python bench/dwp_support.py
	$(VENV)/bin/python bench/prebuilt_fetch.py --rate 125

pulumi-cli:
	@[ -x "$(PULUMI)" ] || { echo "installing the Pulumi CLI $(PULUMI_VERSION) into ~/.pulumi"; \
		curl -fsSL https://get.pulumi.com | sh -s -- --version $(PULUMI_VERSION) --no-edit-path; }

stack-select: deps pulumi-cli
	@$(PULUMI) stack select $(STACK) 2>/dev/null || \
		$(PULUMI) stack init $(STACK) --secrets-provider passphrase

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

up: stack-select
	$(PULUMI) up --stack $(STACK)

preview: stack-select
	$(PULUMI) preview --diff --stack $(STACK)

# The policy pack (policy/) on a preview: every resource against the project's safety rules. The CLI makes
# policy/venv from policy/requirements.txt on first use.
preview-policy: stack-select
	$(PULUMI) preview --diff --stack $(STACK) --policy-pack policy

destroy: stack-select
	$(PULUMI) destroy --stack $(STACK)
