"""The session's disk bookkeeping (tests/disk_use.py): module folders are removed, but never through a mount."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, require_tool
from tests.disk_use import GIB, NEEDED_GIB, DiskUse, remove_folders

# Run in a mount namespace of its own: a tmpfs mounted inside one folder, then both folders handed to
# remove_folders; what it kept, and which files are left, as JSON.
REMOVE_WITH_A_MOUNT = """
import json, subprocess, sys
from pathlib import Path
from tests.disk_use import remove_folders
plain, mounted = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mounted / "mnt")], check=True)
(mounted / "mnt" / "on-the-mount").write_text("kept")
kept = remove_folders([plain, mounted])
print(json.dumps({"kept": kept, "plain": plain.exists(), "on_the_mount": (mounted / "mnt" / "on-the-mount").exists(),
                  "beside_the_mount": (mounted / "beside").exists()}))
"""


def test_a_folder_is_removed_but_never_through_a_mount_inside_it(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a mount namespace needs root")
    require_tool("unshare")
    plain, mounted = tmp_path / "plain", tmp_path / "mounted"
    for folder in (plain / "deep" / "er", mounted / "mnt"):
        folder.mkdir(parents=True)
    (plain / "deep" / "er" / "file").write_text("x")
    (mounted / "beside").write_text("x")
    done = subprocess.run(["unshare", "--mount", "--", sys.executable, "-c", REMOVE_WITH_A_MOUNT, str(plain),
                           str(mounted)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not result["plain"]
    [kept] = result["kept"]
    assert kept.startswith(f"{mounted}: still mounted at {mounted / 'mnt'}"), kept
    # Nothing of the mounted folder was touched: not the mount's files, nor those beside it.
    assert result["on_the_mount"] and result["beside_the_mount"]


def test_a_folder_without_mounts_is_removed_whole(tmp_path):
    folder = tmp_path / "work"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "file").write_bytes(b"\0" * 4096)
    assert remove_folders([folder]) == []
    assert not folder.exists() and tmp_path.exists()


def test_the_summary_names_the_peak_and_the_modules_that_grew_the_disk():
    disk_use = DiskUse()
    start = disk_use.start
    # Two modules: the first grows the disk half a GiB, the second 3 GiB and gives 2 back.
    disk_use.record("tests/test_a.py::one", start + GIB // 2)
    disk_use.record("tests/test_b.py::one", start + 7 * GIB // 2)
    disk_use.record("tests/test_b.py::two", start + 3 * GIB // 2)
    first, *modules = disk_use.summary()
    assert "peak +3.5 GiB (after tests/test_b.py::one)" in first and "+1.5 GiB at the end" in first, first
    assert modules == ["  tests/test_b.py: +1.0 GiB while it ran", "  tests/test_a.py: +0.5 GiB while it ran"]


def test_too_little_free_space_is_said_at_the_start_with_the_figures():
    disk_use = DiskUse()
    disk_use.free_at_start = NEEDED_GIB * GIB
    assert disk_use.low_space_warning() is None
    disk_use.free_at_start = NEEDED_GIB * GIB - GIB // 2
    warning = disk_use.low_space_warning()
    assert f"only {NEEDED_GIB - 0.5:.1f} GiB free" in warning and f"up to {NEEDED_GIB} GiB" in warning, warning
    assert "No space left on device" in warning
