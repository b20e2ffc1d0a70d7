"""The stand-in injector (tests/sidecar_injector.py) against the release's own injector: for every release, each
golden input that shows a step the stand-in takes comes out as the golden output says, and the webhook, registered
with a real API server, injects a pod created there (and leaves a disabled namespace's pods alone)."""

from __future__ import annotations

import json

import pytest

from tests.injector import INJECTED, OVERRIDES_ANNOTATION, pod_template
from tests.releases import Release, releases
from tests.sidecar_injector import CA_ROOT_CONFIGMAP, Owner, inject, injector_webhook, pod_ports_env

RELEASES = releases()
# A golden input, the workload kind the injector was given it as, and the golden output.
CASES = [("statefulset.yaml", "statefulsets", "statefulset.yaml.injected"),
         ("hello-proxy-override.yaml", "deployments", "hello-proxy-override.yaml.injected"),
         ("proxy-override.yaml", "deployments", "proxy-override.yaml.injected")]


def without_empty_resources(container: dict) -> dict:
    """The injector writes back the app's containers from Go types: an unset `resources` comes back as {}."""
    return {k: v for k, v in container.items() if not (k == "resources" and v == {})}


def golden_pair(release: Release, given: str, output: str) -> tuple[dict, dict] | None:
    folder = release.folder / "injection"
    if not (folder / given).exists() or not (folder / output).exists():
        return None
    return pod_template(release.golden(given)), pod_template(release.golden(output))


@pytest.mark.parametrize("release", RELEASES, ids=[r.version for r in RELEASES])
@pytest.mark.parametrize(("given", "kind", "output"), CASES, ids=[c[0] for c in CASES])
def test_inject_gives_the_releases_golden_output(release, given, kind, output):
    pair = golden_pair(release, given, output)
    if pair is None:
        pytest.skip(f"{release.version} has no {given} golden pair")
    pod, expected = pair
    injected = inject(release, pod, Owner(kind, "apps/v1", "default", "hello"))
    assert injected["spec"]["volumes"] == expected["spec"]["volumes"]
    for field in ("containers", "initContainers"):
        got = [without_empty_resources(c) for c in injected["spec"].get(field, [])]
        want = [without_empty_resources(c) for c in expected["spec"].get(field, [])]
        assert got == want, field
    assert set(injected["spec"]) == set(expected["spec"])
    annotations = dict(injected["metadata"]["annotations"])
    wanted = dict(expected["metadata"]["annotations"])
    assert json.loads(annotations.pop(OVERRIDES_ANNOTATION, "{}")) == json.loads(wanted.pop(OVERRIDES_ANNOTATION, "{}"))
    assert annotations == wanted
    assert injected["metadata"]["labels"] == expected["metadata"]["labels"]


def test_every_release_is_checked_on_its_plain_golden():
    assert all(golden_pair(r, *CASES[0][::2]) for r in RELEASES)


def test_pod_ports_are_written_as_the_template_writes_them():
    containers = [{"name": "a", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]},
                  {"name": "b", "ports": [{"containerPort": 8070}]}, {"name": "c"}]
    assert json.loads(pod_ports_env(containers)) == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8070}]
    assert pod_ports_env(containers).splitlines()[2].startswith("    ,{")


def test_the_webhook_injects_a_pod_created_through_the_api_server(api_server, tmp_path):
    release = RELEASES[-1]
    image = f"docker.io/istio/proxyv2:{release.version}"
    with injector_webhook(api_server, release, "127.0.0.1", tmp_path, image) as webhook:
        for name, label in (("injected-ns", "enabled"), ("agents-ns", "disabled")):
            api_server.kubectl("create", "namespace", name)
            api_server.kubectl("label", "namespace", name, f"istio-injection={label}")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "labels": {"app": "app"}},
               "spec": {"containers": [{"name": "app", "image": "example/app:1",
                                        "ports": [{"containerPort": 8080, "name": "http"}]}]}}
        for namespace in ("injected-ns", "agents-ns"):
            api_server.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(pod))
        made = {ns: json.loads(api_server.kubectl("get", "pod", "app", "-n", ns, "-o", "json").stdout)
                for ns in ("injected-ns", "agents-ns")}
        assert webhook.errors == []
        assert webhook.injected == ["injected-ns/app"]
    spec = made["injected-ns"]["spec"]
    sidecars = {c["name"]: c for f in ("initContainers", "containers") for c in spec.get(f, [])
                if c["name"] in INJECTED}
    assert set(sidecars) >= {"istio-init", "istio-proxy"}
    assert {c["image"] for c in sidecars.values()} == {image}
    env = {e["name"]: e.get("value") for e in sidecars["istio-proxy"]["env"]}
    assert json.loads(env["ISTIO_META_POD_PORTS"]) == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert env["ISTIO_META_OWNER"] == "kubernetes://api/v1/namespaces/injected-ns/pods/app"
    assert "sidecar.istio.io/status" in made["injected-ns"]["metadata"]["annotations"]
    assert [c["name"] for c in made["agents-ns"]["spec"]["containers"]] == ["app"]
    assert "initContainers" not in made["agents-ns"]["spec"]
    configmaps = api_server.kubectl("get", "configmap", "-n", "injected-ns", "-o", "name").stdout.split()
    assert f"configmap/{CA_ROOT_CONFIGMAP}" in configmaps
