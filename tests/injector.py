"""What Istio's sidecar injector does with a container of the pod named like one it injects, in Python.

Read from istio/istio `pkg/kube/inject` (webhook.go `reapplyOverwrittenContainers`, `applyContainer`,
`adjustInitContainerUser`; inject.go `RunTemplate`, which moves a user's `istio-proxy` from `containers` to
`initContainers` when the sidecar is native) and Kubernetes' strategic merge patch (apimachinery
`strategicpatch`: merge keys of the core/v1 types, `normalizeElementOrder`/`mergeSortedSlice` for the order
of merged lists). The injector renders its template, merges it over the pod (the template wins), then merges
the pod's own container over that again (the pod wins) and records it in `proxy.istio.io/overrides`.

`injected_with_overrides` applies a pod's overrides to what the injector rendered for the same pod without
them (a golden `*.injected`): tests/test_releases.py first proves it reproduces the injector's own
`proxy-override*` golden files, then uses it to compute the startup pod a cluster of that release runs.
"""

from __future__ import annotations

import copy
import json
from typing import Any

PROXY = "istio-proxy"
INIT = "istio-init"
VALIDATION = "istio-validation"
# The containers the injector's template makes (the others are the pod's own).
INJECTED = (PROXY, INIT, VALIDATION)
AUTO_IMAGE = "auto"
OVERRIDES_ANNOTATION = "proxy.istio.io/overrides"

# Merge keys of the lists a Container and a PodSpec merge by (core/v1 `patchMergeKey`); other lists are atomic.
CONTAINER_LIST_KEYS = {"ports": "containerPort", "env": "name", "volumeMounts": "mountPath",
                       "volumeDevices": "devicePath"}
POD_LIST_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "imagePullSecrets": "name"}


def _merge_list(original: list, patch: list, key: str, item_keys: dict[str, str]) -> list:
    """A list merged by `key`: matching items merged, then ordered as the apiserver's merge orders them."""
    by_key = {item[key]: item for item in original}
    patched = []
    for item in patch:
        patched.append(merge(by_key[item[key]], item, item_keys) if item[key] in by_key else copy.deepcopy(item))
    patch_keys = [item[key] for item in patch]
    server_only = [copy.deepcopy(item) for item in original if item[key] not in patch_keys]
    order = [item[key] for item in original]
    # mergeSortedSlice: a server-only item goes first only when both are in the original and it comes first.
    merged, i, j = [], 0, 0
    while i < len(server_only) or j < len(patched):
        if j >= len(patched):
            merged.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            merged.append(patched[j])
            j += 1
        else:
            left, right = server_only[i][key], patched[j][key]
            if left in order and right in order and order.index(left) < order.index(right):
                merged.append(server_only[i])
                i += 1
            else:
                merged.append(patched[j])
                j += 1
    return merged


def merge(original: dict, patch: dict, list_keys: dict[str, str] = CONTAINER_LIST_KEYS) -> dict:
    """Strategic merge of `patch` over `original` (no directives: the injector's overlays have none)."""
    result = copy.deepcopy(original)
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        elif isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = merge(result[name], value, list_keys)
        elif isinstance(value, list) and name in list_keys and isinstance(result.get(name), list):
            item_keys = CONTAINER_LIST_KEYS if list_keys is POD_LIST_KEYS else list_keys
            result[name] = _merge_list(result[name], value, list_keys[name], item_keys)
        else:
            result[name] = copy.deepcopy(value)
    return result


def _canonical(quantity: str) -> str:
    """A quantity as Go's resource.Quantity writes it back: whole cores lose their milli suffix (3000m → 3)."""
    if quantity.endswith("m") and quantity[:-1].isdigit() and int(quantity[:-1]) % 1000 == 0:
        return str(int(quantity[:-1]) // 1000)
    return quantity


def _canonical_quantities(container: dict) -> dict:
    """The injector decodes the merged pod into Go types: quantities come back canonical."""
    for bound in (container.get("resources") or {}).values():
        for name, quantity in bound.items():
            if isinstance(quantity, str):
                bound[name] = _canonical(quantity)
    return container


def _overlay(container: dict) -> dict:
    """The pod's container as the injector re-applies it: "auto" means the injected image."""
    overlay = copy.deepcopy(container)
    if overlay.get("image") == AUTO_IMAGE:
        del overlay["image"]
    return overlay


def _named(containers: list[dict], name: str) -> dict | None:
    return next((c for c in containers if c["name"] == name), None)


def _adjust_init_user(spec: dict, user_proxy: dict | None, tproxy: bool) -> None:
    """adjustInitContainerUser: the override's runAsUser becomes istio-init's -u (never 0; not with TPROXY)."""
    context = (user_proxy or {}).get("securityContext") or {}
    if "runAsUser" not in context and "runAsGroup" not in context:
        return
    init = _named(spec.get("initContainers", []), INIT) or _named(spec.get("initContainers", []), VALIDATION)
    if init is None:
        return
    if tproxy and "runAsUser" in context:
        proxy = _named(spec["containers"], PROXY) or _named(spec["initContainers"], PROXY)
        proxy["securityContext"]["runAsUser"] = 0
    if not tproxy and init["name"] == VALIDATION:
        init_context = init.setdefault("securityContext", {})
        for field in ("runAsUser", "runAsGroup"):
            if field in context:
                init_context[field] = context[field]
    uid = context.get("runAsUser")
    if not uid:
        return
    args = init.get("args", [])
    if "-u" in args:
        args[args.index("-u") + 1] = str(uid)


def injected_with_overrides(injected: dict, pod_spec: dict) -> tuple[dict, dict]:
    """The pod spec the injector returns for a pod whose spec declares its own `istio-proxy` (and maybe
    `istio-init`), given the pod spec it returns for the same pod without them (`injected`); and the
    overrides annotation's value, parsed.

    The proxy is wherever the injected spec has it (a native sidecar is an init container); each of the
    injector's containers the pod names is merged twice as the injector does: template over the pod's
    container, then the pod's container over that.
    """
    spec = copy.deepcopy(injected)
    user_containers = {c["name"]: c for c in pod_spec.get("containers", [])}
    user_inits = {c["name"]: c for c in pod_spec.get("initContainers", [])}
    # A native proxy is an init container of the template: the pod's istio-proxy, declared among its
    # containers, is moved there first.
    moved = {PROXY: user_containers[PROXY]} if PROXY in user_containers else {}
    candidates = {"containers": user_containers, "initContainers": {**user_inits, **moved}}
    overrides: dict[str, list] = {}
    for field, own in candidates.items():
        for index, template in enumerate(spec.get(field, [])):
            user = own.get(template["name"]) if template["name"] in INJECTED else None
            if user is None:
                continue
            overlay = _overlay(user)
            spec[field][index] = _canonical_quantities(merge(merge(user, template), overlay))
            # Go writes the struct field resources even when empty.
            overrides.setdefault(field, []).append(
                _canonical_quantities({**overlay, "resources": copy.deepcopy(overlay.get("resources", {}))}))
    tproxy = any("TPROXY" in c.get("args", []) for c in spec.get("initContainers", []))
    _adjust_init_user(spec, user_containers.get(PROXY), tproxy)
    return spec, overrides


def overrides_annotation(pod: dict) -> dict:
    """The `proxy.istio.io/overrides` annotation of an injected pod template, parsed."""
    return json.loads(pod["metadata"].get("annotations", {}).get(OVERRIDES_ANNOTATION, "{}"))


def pod_template(document: dict) -> dict:
    """The pod (metadata and spec) of a Pod or of a workload's template."""
    return document if document["kind"] == "Pod" else document["spec"]["template"]


def without(value: Any, *names: str) -> Any:
    """A copy of a mapping without some keys."""
    return {k: v for k, v in value.items() if k not in names}


def status_port_zero(spec: dict, excluded_inbound_ports: str) -> dict:
    """What every release's template renders differently for a pod annotated `status.sidecar.istio.io/port:
    "0"` and `traffic.sidecar.istio.io/excludeInboundPorts`, applied to a golden rendered without them.

    The template (manifests/charts/istio-control/istio-discovery/files/injection-template.yaml) wraps the
    proxy's startupProbe and readinessProbe in `if ne (annotation … status.sidecar.istio.io/port …) "0"`, and
    writes istio-init's `-d` as "15090,15021,{{ excludeInboundPort statusPort excludeInboundPorts }}", which is
    the annotation's ports alone when the status port is 0 (template.go `excludeInboundPort`). Read at every
    release tag in tests/data/istio-releases: each probe of the proxy lies inside that condition. The golden
    files hold no pod with these annotations, so this is the one step not checked against them.
    """
    spec = copy.deepcopy(spec)
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        if container["name"] == PROXY:
            container.pop("readinessProbe", None)
            container.pop("startupProbe", None)
        if container["name"] == INIT:
            args = container["args"]
            args[args.index("-d") + 1] = f"15090,15021,{excluded_inbound_ports}"
    return spec


def with_proxy_image(spec: dict, image: str) -> dict:
    """What the template renders for `sidecar.istio.io/proxyImage: <image>` (an image with "/"): that image for
    every container it injects (tests/test_releases.py checks this on the release's golden files)."""
    spec = copy.deepcopy(spec)
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        if container["name"] in INJECTED:
            container["image"] = image
    return spec
