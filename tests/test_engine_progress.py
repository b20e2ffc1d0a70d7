"""Progress on the real engine: while the prebuilt download runs, `pulumi up` (non-interactive, as CI and
`make up` through a pipe run it) prints the download's progress lines as the script writes them, not all at the
end.

The command is the stack's own envoy-fetch: its script and environment as the program renders them, with
BASE_URL a throttled bucket on loopback and DEST_DIR in the test's folder, run by the command provider (1.2.1)
with `bash -s` in a program of its own (tests/data/envoy_fetch) rather than through `docker exec` in the
debugger container. The provider hands each line of a running command's output to the engine as a status
message, and the CLI's non-interactive display prints each as a row of the resource."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from components.prebuilt_envoy import parse_fetch_result
from tests.conftest import evaluate, require_tool, resource
from tests.http_origin import Origin, publish
from tests.istio_envoy import build
from tests.test_prebuilt_scripts import PAD, PROGRESS, RATE, padded, progress, timed_lines
from tests.toolchain import PULUMI_HOME, Pulumi, program_project, toolchain_bin

COMMAND_PLUGIN = PULUMI_HOME / "plugins" / "resource-command-v1.2.1"


def stream_up(pulumi: Pulumi, timeout: float = 600) -> tuple[int, list[tuple[float, str]]]:
    """`pulumi up --yes`, non-interactive, its output read line by line with each line's arrival
    (time.monotonic()), to its end within `timeout` s (else the up and its plugins are killed and the test fails
    with its last lines)."""
    with subprocess.Popen([str(pulumi.bin_dir / "pulumi"), "up", "--yes", "--non-interactive"], cwd=pulumi.project,
                          env=pulumi.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as up:
        lines = timed_lines(up, up.stdout, timeout)
        return up.wait(timeout=60), lines


@pytest.fixture
def fetch_project(tmp_path) -> tuple[Pulumi, dict]:
    """The program, and envoy-fetch's inputs as the dev stack with envoySource prebuilt renders them."""
    bin_dir = toolchain_bin()
    if not COMMAND_PLUGIN.is_dir():
        pytest.skip(f"no command plugin 1.2.1 in {PULUMI_HOME}: run `make toolchain`")
    for tool in ("curl", "tar", "readelf"):
        require_tool(tool)
    inputs = resource(evaluate("dev", "envoySource=prebuilt"), "envoy-fetch")["inputs"]
    return program_project("envoy_fetch", bin_dir, tmp_path), inputs


def test_pulumi_up_prints_the_downloads_progress_while_it_runs(fetch_project, tmp_path):
    pulumi, inputs = fetch_project
    sha = inputs["environment"]["SHA"]
    # A .dwp that takes about 12 s on the throttled link; the tar.gz comes at once.
    envoy = padded(build(tmp_path / "envoy"), tmp_path / "big", elf=0, dwp=PAD)
    publish(tmp_path / "bucket", sha, envoy.elf, envoy.dwp)
    cache = tmp_path / "cache"
    with Origin(tmp_path / "bucket", rate=RATE) as origin:
        values = {"BASE_URL": origin.url, "DEST_DIR": str(cache)}
        command = tmp_path / "command.json"
        command.write_text(json.dumps({"stdin": inputs["stdin"], "environment": {**inputs["environment"], **values}}))
        pulumi("config", "set", "command", str(command))
        began = time.monotonic()
        returncode, output = stream_up(pulumi)
    text = "\n".join(f"{at - began:6.2f} {line}" for at, line in output)
    assert returncode == 0, text
    (dwp_sent,) = [r.finished for r in origin.requests if r.method == "GET" and r.path.endswith(".dwp")]
    lines = progress(output, f"envoy-debug-{sha}.dwp")
    during = [line for line in lines if line.at < dwp_sent]
    # Shown as they come: several while the .dwp is still on its way, the first well before its end, growing.
    assert len(during) >= 2, text
    assert dwp_sent - during[0].at > 4, text
    assert [line.percent for line in during] == sorted({line.percent for line in during}), text
    assert lines[-1].percent == 100, text
    # The command's stdout, the report the stack parses, holds no progress line.
    stdout = json.loads(pulumi("stack", "output", "--json", "--show-secrets").stdout)["stdout"]
    assert parse_fetch_result(stdout).dwp == str(cache / sha / "envoy.dwp")
    assert not PROGRESS.search(stdout), stdout
