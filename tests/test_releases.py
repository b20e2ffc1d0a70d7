"""Every Istio release in tests/data/istio-releases (discovered, never listed), in both modes and both sidecar
forms, checked against that release's own sources and golden injections.

1. The injector's merge (tests/injector.py) is first proven to be the injector's: it reproduces each
   `proxy-override*` golden output from its input and the plain injection of the same release and form.
2. The stack evaluates (under mocks) with the release's manifest as what its checkout says; in attach mode the
   injector runs the debug image (proxyImage, checked on the golden files) as the proxy in either form.
3. The startup pod a cluster of that release runs is computed the injector's way: the stack's own pod spec
   merged into the release's golden injection (a regular sidecar and, where the release has them, a native
   one). In it istio-proxy waits with nothing that restarts it or holds the app back, with the release's env
   and volumes; its wait and start scripts run for real (sh, in a private mount namespace) and start
   pilot-agent with exactly the release's arguments; istio-init's command runs in a network namespace with a
   stand-in for that release's istio-iptables, and real connections check the capture.
4. The table of supported releases in docs/target.md is this discovery's.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.debug_ports import DebuggerPorts
from components.target import INIT_CONTAINER, NO_OP_HOOK, PROXY_CONTAINER, START_FILE
from tests.conftest import ROOT, evaluate, require_tool, resource
from tests.injector import (
    INJECTED,
    injected_with_overrides,
    overrides_annotation,
    pod_template,
    status_port_zero,
    with_proxy_image,
)
from tests.releases import DATA, SHARED, Release, releases, version_key
from tests.test_iptables import APP_UID, PEER_IP, PEER_PORT, POD_IP, PROXY_UID, Namespaces, require_root
from tests.test_target import WALKTHROUGH_START, ints, validate

RELEASES = releases()
DEBUGGER = DebuggerPorts(2159)  # the dev stack's
# Env the template derives from the pod or from the golden test's own mesh settings, not from the release.
POD_DEPENDENT_ENV = {"ISTIO_META_POD_PORTS", "ISTIO_META_APP_CONTAINERS", "ISTIO_META_WORKLOAD_NAME",
                     "ISTIO_META_OWNER", "ISTIO_KUBE_APP_PROBERS", "ISTIO_META_NETWORK"}
OVERRIDE_GOLDEN = re.compile(r"^(proxy-override[a-z-]*?)(-native)?\.yaml(\.[a-z]+)?\.injected$")


def ids(items) -> list[str]:
    return [getattr(item, "version", str(item)) for item in items]


# --- 1. the merge is the injector's ------------------------------------------------------------------


def override_cases() -> list[tuple[Release, str, str | None]]:
    """Each proxy-override golden, with the plain injection of the same form to merge into (None: there is
    none in the release's golden files: the TPROXY variant)."""
    cases = []
    for release in RELEASES:
        injection = release.folder / "injection"
        for golden in sorted(injection.glob("proxy-override*.injected")):
            base, native, variant = OVERRIDE_GOLDEN.match(golden.name).groups()
            plain = "native-sidecar.yaml.injected" if native else f"hello.yaml{variant or ''}.injected"
            cases.append((release, golden.name, plain if (injection / plain).exists() else None))
    return cases


OVERRIDE_CASES = override_cases()


def sidecar_containers(spec: dict) -> dict[str, dict]:
    return {f"{field}/{c['name']}": c for field in ("containers", "initContainers")
            for c in spec.get(field, []) if c["name"] in INJECTED}


def with_pod_env_of(plain: dict, golden: dict) -> dict:
    """The plain injection's sidecar, with the env the template derives from the pod taken from the golden's
    pod (the two pods differ in ports, names and probes; no override sets env)."""
    plain = copy.deepcopy(plain)
    wanted = sidecar_containers(golden)
    for key, container in sidecar_containers(plain).items():
        if "env" not in container or key not in wanted:
            continue
        own = {e["name"]: e for e in wanted[key].get("env", [])}
        env = [own.get(e["name"], e) for e in container["env"]
               if e["name"] not in POD_DEPENDENT_ENV or e["name"] in own]
        env += [e for name, e in own.items() if name in POD_DEPENDENT_ENV and name not in {x["name"] for x in env}]
        container["env"] = env
    return plain


@pytest.mark.parametrize(("release", "golden", "plain"), [c for c in OVERRIDE_CASES if c[2]],
                         ids=[f"{r.version}-{g}" for r, g, p in OVERRIDE_CASES if p])
def test_the_merge_reproduces_the_injectors_proxy_override_golden(release, golden, plain):
    expected = pod_template(release.golden(golden))
    name = OVERRIDE_GOLDEN.match(golden).group(1) + ".yaml"
    pod = pod_template(release.golden(name))
    base = with_pod_env_of(pod_template(release.golden(plain))["spec"], expected["spec"])
    merged, overrides = injected_with_overrides(base, pod["spec"])
    assert sidecar_containers(merged) == sidecar_containers(expected["spec"])
    assert overrides == overrides_annotation(expected)


def test_every_release_has_override_goldens_the_merge_reproduces():
    reproduced = {release.version for release, _, plain in OVERRIDE_CASES if plain}
    assert reproduced == {release.version for release in RELEASES}
    # Native overrides are reproduced wherever the release injects native sidecars.
    native = {r.version for r, golden, plain in OVERRIDE_CASES if plain and "-native" in golden}
    assert native == {r.version for r in RELEASES if "native" in r.sidecar_forms}


# --- 2. the stack, with the release's facts -------------------------------------------------------------


def stack(release: Release, mode: str) -> dict:
    return evaluate("dev", f"istioVersion={release.version}", f"mode={mode}",
                    facts=str(release.folder / "manifest.json"))


@pytest.mark.parametrize("release", RELEASES, ids=ids(RELEASES))
@pytest.mark.parametrize("mode", ["attach", "startup"])
def test_the_stack_evaluates_with_the_releases_facts(release, mode):
    evaluation = stack(release, mode)
    facts = release.manifest
    assert resource(evaluation, "builder-image")["inputs"]["name"] == facts["builderImage"]
    assert evaluation["outputs"]["sourceCommit"] == facts["proxySha"]
    assert resource(evaluation, "debug-image-build")["inputs"]["environment"]["BASE_IMAGE"] == (
        f"docker.io/istio/proxyv2:{release.version}")
    # Every supported release builds Envoy as the root //:envoy.
    assert facts["rootEnvoyTarget"] is True
    assert resource(evaluation, "envoy-make")["inputs"]["environment"]["BAZEL_TARGET"] == ":envoy"
    statefulset = ints(resource(evaluation, "target-statefulset")["inputs"])
    assert [c["name"] for c in statefulset["spec"]["template"]["spec"]["containers"]] == ["main-app", PROXY_CONTAINER]
    assert bool(evaluation["outputs"]["startCommand"]) == (mode == "startup")
    for name in ("target-statefulset", "target-service", "target-namespace"):
        kind = {"target-statefulset": ("apps/v1", "StatefulSet"), "target-service": ("v1", "Service"),
                "target-namespace": ("v1", "Namespace")}[name]
        validate({"apiVersion": kind[0], "kind": kind[1], **ints(resource(evaluation, name)["inputs"])})


@pytest.mark.parametrize("release", RELEASES, ids=ids(RELEASES))
def test_a_prebuilt_envoy_is_the_one_the_releases_istio_proxy_pins(release):
    evaluation = evaluate("dev", f"istioVersion={release.version}", "envoySource=prebuilt",
                          facts=str(release.folder / "manifest.json"))
    assert resource(evaluation, "envoy-fetch")["inputs"]["environment"]["SHA"] == release.manifest["proxySha"]
    assert evaluation["outputs"]["envoyCommit"] == release.manifest["envoy"]["sha"]


@pytest.mark.parametrize("release", RELEASES, ids=ids(RELEASES))
def test_the_proxy_image_annotation_renders_as_the_golden_files_show(release):
    pod = pod_template(release.golden("hello-proxy-override.yaml"))
    image = pod["metadata"]["annotations"]["sidecar.istio.io/proxyImage"]
    rendered = with_proxy_image(pod_template(release.golden("hello.yaml.injected"))["spec"], image)
    expected = pod_template(release.golden("hello-proxy-override.yaml.injected"))["spec"]
    assert sidecar_containers(rendered) == sidecar_containers(expected)


@pytest.mark.parametrize(("release", "form"), [(r, f) for r in RELEASES for f in r.sidecar_forms],
                         ids=[f"{r.version}-{f}" for r in RELEASES for f in r.sidecar_forms])
def test_attach_mode_runs_the_debug_image_as_the_proxy_in_either_form(release, form):
    pod = ints(resource(stack(release, "attach"), "target-statefulset")["inputs"]["spec"]["template"])
    image = pod["metadata"]["annotations"]["sidecar.istio.io/proxyImage"]
    golden = pod_template(release.golden(release.sidecar_forms[form]))["spec"]
    merged, _ = injected_with_overrides(with_proxy_image(golden, image), pod["spec"])
    field = "initContainers" if form == "native" else "containers"
    proxy = next(c for c in merged[field] if c["name"] == PROXY_CONTAINER)
    assert proxy["image"] == image and "@sha256:" in image
    # Everything else is the release's own; the pod adds only its pull policy (the image is pinned by digest).
    own = next(c for c in golden[field] if c["name"] == PROXY_CONTAINER)
    assert {k: v for k, v in proxy.items() if k != "image"} == {
        **{k: v for k, v in own.items() if k != "image"}, "imagePullPolicy": "IfNotPresent"}


# --- 3. the startup pod a cluster of the release runs ---------------------------------------------------


FORM_CASES = [(release, form) for release in RELEASES for form in release.sidecar_forms]
FORM_IDS = [f"{release.version}-{form}" for release, form in FORM_CASES]


def stack_pod(release: Release) -> dict:
    return ints(resource(stack(release, "startup"), "target-statefulset")["inputs"]["spec"]["template"])


def startup_pod(release: Release, form: str) -> tuple[dict, dict]:
    """The release's golden injection of that form, and the startup pod the cluster would run: the golden
    as the template renders it for the stack's annotations, the stack's containers merged in, its app in
    place of the golden's."""
    golden = pod_template(release.golden(release.sidecar_forms[form]))
    pod = stack_pod(release)
    annotations = pod["metadata"]["annotations"]
    assert annotations["status.sidecar.istio.io/port"] == "0"
    rendered = status_port_zero(golden["spec"], annotations["traffic.sidecar.istio.io/excludeInboundPorts"])
    merged, _ = injected_with_overrides(rendered, pod["spec"])
    injected_volumes = set(sidecar_status(golden)["volumes"])
    merged["containers"] = [c for c in pod["spec"]["containers"] if c["name"] not in INJECTED] + [
        c for c in merged["containers"] if c["name"] in INJECTED]
    merged["volumes"] = [v for v in merged["volumes"] if v["name"] in injected_volumes]
    return golden, {"metadata": pod["metadata"], "spec": merged}


def sidecar_status(pod: dict) -> dict:
    return json.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])


def named(spec: dict, name: str) -> dict:
    return next(c for field in ("initContainers", "containers") for c in spec.get(field, []) if c["name"] == name)


@pytest.mark.parametrize(("release", "form"), FORM_CASES, ids=FORM_IDS)
def test_the_waiting_proxy_has_nothing_that_restarts_it_or_holds_the_app(release, form):
    golden, pod = startup_pod(release, form)
    proxy, original = named(pod["spec"], PROXY_CONTAINER), named(golden["spec"], PROXY_CONTAINER)
    assert proxy["command"][:2] == ["/bin/sh", "-c"] and proxy["command"][3] == START_FILE
    assert proxy["args"] == original["args"], "pilot-agent's own arguments, kept for the start file"
    assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(proxy)
    assert proxy["lifecycle"] == {"postStart": NO_OP_HOOK, "preStop": NO_OP_HOOK}
    assert proxy.get("restartPolicy") == original.get("restartPolicy")
    in_init = any(c["name"] == PROXY_CONTAINER for c in pod["spec"].get("initContainers", []))
    assert in_init == (form == "native")
    assert "readinessGates" not in pod["spec"]


@pytest.mark.parametrize(("release", "form"), FORM_CASES, ids=FORM_IDS)
def test_the_proxys_env_volumes_and_image_are_the_releases_own(release, form):
    golden, pod = startup_pod(release, form)
    proxy, original = named(pod["spec"], PROXY_CONTAINER), named(golden["spec"], PROXY_CONTAINER)
    assert proxy["env"] == original["env"]
    assert proxy["volumeMounts"] == original["volumeMounts"]
    assert proxy["image"] == original["image"]
    assert proxy["securityContext"]["runAsUser"] == PROXY_UID
    assert {v["name"] for v in pod["spec"]["volumes"]} == set(sidecar_status(golden)["volumes"])
    ports = {p["containerPort"] for p in proxy["ports"]}
    assert set(DEBUGGER.all) <= ports and 15090 in ports


@pytest.mark.parametrize(("release", "form"), FORM_CASES, ids=FORM_IDS)
def test_the_startup_pod_is_valid_for_a_kubernetes_with_native_sidecars(release, form):
    _, pod = startup_pod(release, form)
    validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fortio-server-0"}, "spec": pod["spec"]})


def private_root(tmp: Path, pilot_agent: str, private_tmp: bool = True) -> list[str]:
    """A command prefix: a private mount namespace whose /usr/local/bin holds only a stand-in pilot-agent (the
    image's) and, with `private_tmp`, whose /tmp is empty, so the scripts run with their own absolute paths."""
    (tmp / "bin").mkdir()
    (tmp / "bin" / "pilot-agent").write_text(pilot_agent)
    (tmp / "bin" / "pilot-agent").chmod(0o755)
    mounts = [f"mount --bind {shlex.quote(str(tmp / 'bin'))} /usr/local/bin"]
    if private_tmp:
        mounts.append("mount -t tmpfs tmpfs /tmp")
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", " && ".join([*mounts, 'exec "$@"']),
            "setup"]


# A stand-in pilot-agent that records its arguments (beside itself: /tmp is the private one).
RECORDER = "#!/bin/sh\nprintf '%s\\0' \"$@\" > /usr/local/bin/started\n"


def kubelet_args(args: list[str], namespace: str) -> list[str]:
    """The kubelet expands $(VAR) references to the container's env in args."""
    return [a.replace("$(POD_NAMESPACE)", namespace) for a in args]


def wait_then_start(tmp: Path, command: list[str], args: list[str]) -> tuple[list[str], str]:
    """Runs the waiting istio-proxy's command with these (kubelet-expanded) args, then the start file as
    startCommand does, then SIGTERMs the wait, in a private root with a recording pilot-agent: what pilot-agent
    was started with, and the wait's exit report ("wait ended: <status> in <ms> ms", from the SIGTERM on)."""
    require_root()
    for tool in ("unshare", "sh", "mount"):
        require_tool(tool)
    script = (f'{shlex.join([*command, *args])} & wait_pid=$!; '
              f'for _ in $(seq 100); do [ -s {START_FILE} ] && break; sleep 0.05; done; '
              f'/bin/sh {START_FILE}; asked=$(date +%s%N); kill -TERM $wait_pid; wait $wait_pid; status=$?; '
              f'echo "wait ended: $status in $((($(date +%s%N) - asked) / 1000000)) ms"')
    done = subprocess.run([*private_root(tmp, RECORDER), "sh", "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return (tmp / "bin" / "started").read_text().split("\0")[:-1], done.stdout


@pytest.mark.parametrize(("release", "form"), FORM_CASES, ids=FORM_IDS)
def test_the_start_file_starts_pilot_agent_exactly_as_the_injected_proxy(release, form, tmp_path):
    golden, pod = startup_pod(release, form)
    proxy = named(pod["spec"], PROXY_CONTAINER)
    recorded, report = wait_then_start(tmp_path, proxy["command"], kubelet_args(proxy["args"], "istio-debug"))
    ended = re.search(r"wait ended: (\d+) in (\d+) ms", report)
    assert ended and ended[1] == "0", f"SIGTERM ends the wait with success: {report}"
    # At once: in milliseconds, measured from the SIGTERM (not from the start, which includes the private root's
    # set-up and the wait for the start file); 5 s leave room for a stall of this machine.
    assert int(ended[2]) < 5000, report
    assert recorded == kubelet_args(named(golden["spec"], PROXY_CONTAINER)["args"], "istio-debug")


def test_for_the_walkthroughs_release_the_start_file_runs_the_walkthroughs_own_command(tmp_path):
    """The dev stack's release (the walkthrough's): what the start file runs is what S11 typed by hand."""
    version = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["istio-proxy-debug:istioVersion"]
    release = next(r for r in RELEASES if r.version == version)
    proxy = named(startup_pod(release, "regular")[1]["spec"], PROXY_CONTAINER)
    recorded, _ = wait_then_start(tmp_path, proxy["command"], kubelet_args(proxy["args"], "mark"))
    walkthrough = shlex.split(WALKTHROUGH_START.replace("${POD_NAMESPACE}", "mark"))
    assert walkthrough[0] == "/usr/local/bin/pilot-agent"
    assert recorded == walkthrough[1:]


def test_the_start_file_keeps_arguments_with_quotes_and_spaces(tmp_path):
    proxy = named(stack_pod(RELEASES[-1])["spec"], PROXY_CONTAINER)
    odd = ["proxy", "it's", "a b", "$(x)", "--x=\"y\"", ""]
    assert wait_then_start(tmp_path, proxy["command"], odd)[0] == odd


def bounding_set(security_context: dict) -> str:
    """setpriv's --bounding-set for a container's capabilities (the merged drop ALL leaves only the adds)."""
    capabilities = security_context.get("capabilities", {})
    assert capabilities.get("drop") == ["ALL"], "every release's template drops ALL from istio-proxy"
    return ",".join(["-all", *(f"+{c.lower()}" for c in capabilities.get("add", []))])


@pytest.mark.parametrize(("release", "form"), FORM_CASES, ids=FORM_IDS)
def test_the_images_sudo_gets_root_with_ptrace_in_the_waiting_proxy(release, form, tmp_path):
    """Walkthrough S11 runs lldb-server in istio-proxy through the image's passwordless sudo: with the merged
    security context (as uid 1337, privilege escalation allowed), sudo becomes root with CAP_SYS_PTRACE; with
    the template's own capabilities alone it cannot."""
    require_root()
    require_tool("sudo")
    _, pod = startup_pod(release, form)
    context = named(pod["spec"], PROXY_CONTAINER)["securityContext"]
    assert context["allowPrivilegeEscalation"] is True and context["runAsUser"] == PROXY_UID
    # The image's user: istio-proxy, uid 1337, in passwd, group and shadow, with NOPASSWD sudo.
    etc = {"passwd": "istio-proxy:x:1337:1337::/home/istio-proxy:/bin/sh\n", "group": "istio-proxy:x:1337:\n",
           "shadow": "istio-proxy:*:19000:0:99999:7:::\n"}
    mounts = []
    for name, line in etc.items():
        (tmp_path / name).write_text(Path(f"/etc/{name}").read_text() + line)
        mounts.append(f"mount --bind {tmp_path / name} /etc/{name}")
    (tmp_path / "sudoers").write_text("istio-proxy ALL=(ALL) NOPASSWD: ALL\n")
    (tmp_path / "sudoers").chmod(0o440)
    mounts.append(f"mount --bind {tmp_path / 'sudoers'} /etc/sudoers")

    def sudo(bounding: str) -> subprocess.CompletedProcess:
        inner = (f"exec setpriv --reuid {PROXY_UID} --regid {PROXY_UID} --clear-groups --bounding-set={bounding} "
                 "--inh-caps=-all sudo -n sh -c 'id -u; grep ^CapEff /proc/self/status'")
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                               " && ".join([*mounts, inner])], capture_output=True, text=True, timeout=30)

    done = sudo(bounding_set(context))
    assert done.stdout.splitlines()[0] == "0", done.stderr
    effective = int(done.stdout.split("CapEff:")[1].split()[0], 16)
    assert effective & (1 << 19), "CAP_SYS_PTRACE"
    assert sudo("-all,+sys_ptrace").stdout == "", "the template's drop ALL alone leaves sudo powerless"


@pytest.mark.parametrize("name", ["istio-proxy-wait.sh", "istio-init-capture.sh"])
def test_the_container_scripts_are_posix_sh_that_shellcheck_accepts(name):
    shellcheck = require_tool("shellcheck")
    path = ROOT / "components" / "scripts" / name
    done = subprocess.run([shellcheck, "--severity=style", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# --- the capture, with real traffic -------------------------------------------------------------------


CAPTURE_CASES = [(release, "legacy") for release in RELEASES] + [(RELEASES[-1], "nft")]


@pytest.fixture(scope="module", params=CAPTURE_CASES, ids=[f"{r.version}-{b}" for r, b in CAPTURE_CASES])
def captured_pod(request, module_tmp):
    """A pod network namespace after the startup pod's istio-init ran in it (release's own args, the stack's
    command), with a stand-in for that release's istio-iptables; listeners on both sides."""
    require_root()
    release, backend = request.param
    for tool in ("ip", "setpriv", "unshare", "timeout", f"iptables-{backend}-restore", f"iptables-{backend}-save"):
        require_tool(tool)
    _, pod = startup_pod(release, sorted(release.sidecar_forms)[0])
    init = named(pod["spec"], INIT_CONTAINER)
    tmp = module_tmp(f"capture-{release.version}-{backend}")
    stand_in = f"#!/bin/sh\nexec {sys.executable} {ROOT / 'tests' / 'istio_iptables.py'} {backend} \"$@\"\n"
    namespaces = Namespaces(f"{os.getpid()}-{release.version.replace('.', '')}{backend[0]}")
    request.addfinalizer(namespaces.remove)
    namespaces.create()
    env = {e["name"]: e["value"] for e in init.get("env", [])}
    # As the container runs it: root with only NET_ADMIN and NET_RAW, its env, its command and args.
    done = subprocess.run(
        # /tmp stays: the stand-in's interpreter may live there (a clone under /tmp).
        ["ip", "netns", "exec", namespaces.pod, *private_root(tmp, stand_in, private_tmp=False),
         "setpriv", "--bounding-set=-all,+net_admin,+net_raw", "--inh-caps=-all", "--no-new-privs",
         "env", "-i", "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *(f"{k}={v}" for k, v in env.items()),
         *init["command"], *init["args"]],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    namespaces.init_output = done.stdout
    namespaces.listen(namespaces.pod, "pod", [15001, 15006, 8080, 15020, 15021, 15090, *DEBUGGER.all])
    namespaces.listen(namespaces.peer, "peer", [PEER_PORT])
    return namespaces


def test_capture_the_app_users_outbound_lands_on_envoys_15001(captured_pod):
    assert captured_pod.connect(captured_pod.pod, PEER_IP, PEER_PORT, user=(APP_UID, APP_UID)) == "pod:15001"


@pytest.mark.parametrize("user", [(PROXY_UID, PROXY_UID), None, (APP_UID + 1, APP_UID + 1), (APP_UID, APP_UID + 1)],
                         ids=["proxy", "root", "another-user", "app-uid-other-gid"])
def test_capture_everyone_else_goes_out_directly(captured_pod, user):
    assert captured_pod.connect(captured_pod.pod, PEER_IP, PEER_PORT, user=user) == f"peer:{PEER_PORT}"


def test_capture_inbound_to_the_app_lands_on_envoys_15006(captured_pod):
    assert captured_pod.connect(captured_pod.peer, POD_IP, 8080) == "pod:15006"


def test_capture_inbound_to_the_debugger_ports_is_direct(captured_pod):
    for port in DEBUGGER.all:
        assert captured_pod.connect(captured_pod.peer, POD_IP, port) == f"pod:{port}"
    assert captured_pod.connect(captured_pod.peer, POD_IP, DEBUGGER.all[-1] + 1) == "pod:15006", "and no other"


def test_capture_istio_init_logs_the_table_it_left(captured_pod):
    """What `kubectl logs <pod> -c istio-init` shows: outbound capture narrowed to the app, first in ISTIO_REDIRECT,
    and the debugger ports among the release's own inbound exclusions."""
    redirect = [line for line in captured_pod.init_output.splitlines() if line.startswith("-A ISTIO_REDIRECT ")]
    assert redirect[:2] == [f"-A ISTIO_REDIRECT -m owner ! --uid-owner {APP_UID} -j RETURN",
                            f"-A ISTIO_REDIRECT -m owner ! --gid-owner {APP_UID} -j RETURN"]
    assert redirect[-1] == "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"
    for port in DEBUGGER.all:
        assert f"-A ISTIO_INBOUND -p tcp -m tcp --dport {port} -j RETURN" in captured_pod.init_output


def test_capture_istios_own_excluded_ports_stay_direct(captured_pod):
    for port in (15090, 15021):
        assert captured_pod.connect(captured_pod.peer, POD_IP, port) == f"pod:{port}"


# --- 4. the table in docs/target.md -------------------------------------------------------------------------


def supported_table() -> str:
    rows = ["| Istio | proxy commit | sidecar forms checked | modes |", "|---|---|---|---|"]
    for release in RELEASES:
        forms = ", ".join(sorted(release.sidecar_forms))
        rows.append(f"| {release.version} | `{release.manifest['proxySha'][:12]}` | {forms} | attach, startup |")
    return "\n".join(rows) + "\n"


def test_the_table_of_supported_releases_is_generated_from_the_tests():
    page = (ROOT / "docs" / "target.md").read_text()
    start, end = "<!-- releases: generated by tests/test_releases.py -->\n", "<!-- end of releases -->"
    assert start in page and end in page, "docs/target.md must hold the generated table between its markers"
    table = page.split(start, 1)[1].split(end, 1)[0]
    assert table == supported_table(), "run `python -m tests.test_releases` and paste its output"


def test_the_copy_of_the_release_facts_is_the_shared_one():
    versions = [release.version for release in RELEASES]
    assert versions == sorted(versions, key=version_key) and len(versions) >= 2
    for release in RELEASES:
        assert release.manifest["istioVersion"] == release.version
        assert release.manifest["proxySha"] == release.manifest["proxyTagCommit"]
    if not SHARED.exists():
        return  # a clone without ../shared: the copy is all there is
    assert {p.name for p in SHARED.iterdir() if (p / "manifest.json").exists()} == set(versions)
    for copied in DATA.rglob("*"):
        if copied.is_file():
            assert copied.read_bytes() == (SHARED / copied.relative_to(DATA)).read_bytes(), copied


if __name__ == "__main__":
    sys.stdout.write(supported_table())
