"""How much of the disk the test session takes: its file system's use is read after every test, and the summary
gives the peak over the session's start, what is left at its end, and the modules that added most while they ran.
The tests build images, unpack them on real nodes and make lldb-server bundles: a run that fills the disk fails in
hundreds of places at once, so the figure is in every run's log. The file system may be shared with other work,
whose writes count too."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
# What the session took at its peak over its start in a first run on a new machine (the Docker engine's images and
# the real node's containerd, the modules' folders), with some room: docs/testing.md#disk gives the measured figure.
NEEDED_GIB = 16


class DiskUse:
    """The plugin: registered by conftest's pytest_configure."""

    def __init__(self) -> None:
        usage = shutil.disk_usage(ROOT)
        self.start = self.last = self.peak = usage.total - usage.free
        self.free_at_start = usage.free
        self.peak_after = "the start"
        # module → [use before its first test, use after its last test so far]
        self.modules: dict[str, list[int]] = {}

    def low_space_warning(self) -> str | None:
        if self.free_at_start >= NEEDED_GIB * GIB:
            return None
        return (f"disk: only {self.free_at_start / GIB:.1f} GiB free, and the tests take up to {NEEDED_GIB} GiB: "
                "they may stop with 'No space left on device' (docs/testing.md#disk)")

    def pytest_sessionstart(self, session) -> None:
        if warning := self.low_space_warning():
            session.config.pluginmanager.get_plugin("terminalreporter").write_line(warning)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        usage = shutil.disk_usage(ROOT)
        self.record(nodeid, usage.total - usage.free)

    def record(self, nodeid: str, now: int) -> None:
        self.modules.setdefault(nodeid.split("::", 1)[0], [self.last, now])[1] = now
        if now > self.peak:
            self.peak, self.peak_after = now, nodeid
        self.last = now

    def summary(self) -> list[str]:
        growth = sorted(((after - before, module) for module, (before, after) in self.modules.items()), reverse=True)
        lines = [f"disk: {self.free_at_start / GIB:.1f} GiB free at the start; peak "
                 f"+{(self.peak - self.start) / GIB:.1f} GiB (after {self.peak_after}), "
                 f"{(self.last - self.start) / GIB:+.1f} GiB at the end"]
        lines += [f"  {module}: {delta / GIB:+.1f} GiB while it ran"
                  for delta, module in growth[:5] if delta >= GIB // 20]
        return lines

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.modules:
            for line in [*self.summary(), *filter(None, [self.low_space_warning()])]:
                terminalreporter.write_line(line)


def mount_points_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace: a folder with one is not removed, since removing
    it would reach into what is mounted there."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # The mount point is the 5th field, with space, tab, newline and backslash octal-escaped.
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


def remove_folders(folders: list[Path]) -> list[str]:
    """Each folder removed, but one with something mounted in it; what was kept, and why."""
    kept = []
    for folder in folders:
        if mounted := mount_points_under(folder):
            kept.append(f"{folder}: still mounted at {', '.join(mounted)}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return kept
