"""BAZEL_BUILD_ARGS read as bazel reads them: the compilation mode, repeatable options, where DWARF goes, and
the linker options that only lld understands."""

from __future__ import annotations

import shlex


def bazel_compilation_mode(bazel_build_args: str) -> str:
    """The compilation mode (`dbg`, `opt` or `fastbuild`) the args select; the last setting wins."""
    mode = "fastbuild"
    words = shlex.split(bazel_build_args)
    for i, word in enumerate(words):
        if word in ("-c", "--compilation_mode") and i + 1 < len(words):
            mode = words[i + 1]
        elif word.startswith("--compilation_mode="):
            mode = word.split("=", 1)[1]
        elif word == "--config=debug":  # istio/proxy .bazelrc: build:debug -c dbg
            mode = "dbg"
        elif word == "--config=release":  # istio/proxy .bazelrc: build:release -c opt --strip=always
            mode = "opt"
    return mode


def bazel_option_values(bazel_build_args: str, option: str) -> list[str]:
    """What the args pass with a repeatable bazel option (`copt`, `linkopt`), in order, as bazel reads it:
    `--copt=-g` or `--copt -g`."""
    words = shlex.split(bazel_build_args)
    values = []
    for i, word in enumerate(words):
        if word.startswith(f"--{option}="):
            values.append(word.split("=", 1)[1])
        elif word == f"--{option}" and i + 1 < len(words):
            values.append(words[i + 1])
    return values


# istio/proxy's envoy.bazelrc: build:linux --fission=dbg,opt.
_BAZELRC_FISSION = "dbg,opt"


def bazel_fission_modes(bazel_build_args: str) -> set[str]:
    """The compilation modes whose DWARF goes to .dwo files beside the objects; the last --fission wins."""
    value = ([_BAZELRC_FISSION] + bazel_option_values(bazel_build_args, "fission"))[-1]
    if value == "yes":
        return {"fastbuild", "dbg", "opt"}
    return set() if value == "no" else set(value.split(","))


def marks_dead_code(linkopt: str) -> bool:
    """Whether a linker option is the stack's dead-code marking (lld's -z dead-reloc-in-nonalloc)."""
    return "dead-reloc-in-nonalloc" in linkopt


def lld_options_without_lld(bazel_build_args: str) -> list[str]:
    """The --linkopt values only lld understands, when the args do not link with lld (gold fails the link
    on them; GNU ld ignores them)."""
    linkopts = bazel_option_values(bazel_build_args, "linkopt")
    linkers = [o.split("=", 1)[1] for o in linkopts if o.startswith("-fuse-ld=")]
    if linkers and linkers[-1] == "lld":
        return []
    return [o for o in linkopts if marks_dead_code(o)]
