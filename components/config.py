"""The stack configuration: every setting read and checked before any resource exists.

`parse_config` is a pure function from the raw config strings (as the Pulumi CLI hands them to the
program, project defaults from Pulumi.yaml already applied) to a typed `StackConfig`: each setting of
components/settings.py read in turn, then each rule of components/config_rules.py. Every problem is
collected, so one `pulumi preview` names all of them at once, each with the key, the bad value and
what is expected. `load_config` reads the raw strings through `pulumi.Config` and turns the problems
into a `pulumi.RunError`, which the CLI prints without a stack trace.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import field, make_dataclass

import pulumi

from components.bazel_args import bazel_compilation_mode
from components.config_rules import RULES
from components.debug_ports import DebuggerPorts
from components.settings import KEYS, PROJECT, SETTINGS, Problem, Values
from components.stack_names import REGISTRY_CONTAINER, kind_cluster_name, kind_kubeconfig_file, physical_name

_SETTING = {setting.key: setting for setting in SETTINGS}


class ConfigError(Exception):
    """All the problems found in one stack configuration."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"the stack configuration has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )


class _FollowsFromTheSettings:
    """What a stack's configuration implies beyond its settings."""

    @property
    def prebuilt(self) -> bool:
        return self.envoy_source == "prebuilt"

    @property
    def debugger_ports(self) -> DebuggerPorts:
        return DebuggerPorts(self.lldb_server_port)

    @property
    def compilation_mode(self) -> str:
        return bazel_compilation_mode(self.bazel_build_args)

    @property
    def kind_cluster_name(self) -> str | None:
        return kind_cluster_name(self.stack) if self.cluster == "kind" else None

    @property
    def kubeconfig_file(self) -> str | None:
        """Where the kind cluster's own kubeconfig is written: under workDir, never ~/.kube/config."""
        return kind_kubeconfig_file(self.work_dir, self.kind_cluster_name) if self.cluster == "kind" else None

    @property
    def registry_pull_host(self) -> str:
        """With nodeAccess docker the nodes pull from the registry container by its name on nodeNetwork."""
        return self.registry_container if self.node_access == "docker" else self.registry_host

    @property
    def registry_container(self) -> str:
        return self.physical_name(REGISTRY_CONTAINER)

    def physical_name(self, base: str) -> str:
        return physical_name(self.stack, base)


# The typed configuration: the project and stack, then one field per setting (its key in snake_case), in the
# table's order. Secrets stay out of its repr.
StackConfig = make_dataclass(
    "StackConfig",
    [("project", str), ("stack", str),
     *((s.field, s.python_type, field(repr=not s.secret)) for s in SETTINGS)],
    bases=(_FollowsFromTheSettings,), frozen=True,
)
StackConfig.__module__ = __name__


def _message(problem: Problem, values: Values) -> str:
    if problem.missing:
        return f"{PROJECT}:{problem.key} is required: {problem.sentence}"
    shown = _SETTING[problem.key].shown(values.raw.get(problem.key), values[problem.key])
    return f"{PROJECT}:{problem.key} = {shown}: {problem.sentence}"


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS, n=1)
    hint = f"did you mean {close[0]}?" if close else f"remove it with `pulumi config rm {key}`"
    return f"{PROJECT}:{key} is not a setting of this project: {hint}"


def parse_config(raw: Mapping[str, str | None], stack: str, project: str = PROJECT):
    """Checks every key of `raw` (the CLI's strings, defaults applied) and returns the typed config."""
    problems = [_unknown_key(key) for key in raw if key not in _SETTING]
    values = Values(raw, stack)
    for setting in SETTINGS:
        values[setting.key], problem = setting.read(values)
        if problem is not None:
            problems.append(_message(problem, values))
    for rule in RULES:
        for problem in rule(values):
            problems.append(_message(problem, values))
            values[problem.key] = None
    if problems:
        raise ConfigError(problems)
    return StackConfig(project=project, stack=stack, **{s.field: values[s.key] for s in SETTINGS})


def _project_keys_set() -> list[str]:
    """The project's keys the stack sets, to catch misspelt ones (pulumi.Config cannot list keys)."""
    from pulumi.runtime import config as runtime_config

    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    prefix = f"{pulumi.get_project()}:"
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix))


def load_config() -> StackConfig:
    """Reads and checks the stack's config; a bad value stops the program with one clear message."""
    config = pulumi.Config()
    raw = {key: config.get(key) for key in set(KEYS) | set(_project_keys_set())}
    try:
        return parse_config(raw, stack=pulumi.get_stack(), project=pulumi.get_project())
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
