"""envoySource prebuilt: the download and the Envoy checkout, run for real by bash exactly as the program renders
them (script text and environment from the program evaluated under mocks; only the paths and the server's address
are this test's), against a real HTTP server on loopback that serves a synthetic Envoy published the way Istio's
CI publishes envoy-debug-<SHA> (tests/istio_envoy.py), and against real git repositories."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from components.prebuilt_envoy import parse_checkout_result, parse_fetch_result
from tests.conftest import ROOT, evaluate, git, require_tool, resource, run_rendered
from tests.http_origin import Origin, publish
from tests.istio_envoy import ENVOY_REPOSITORY_NAME, PublishedEnvoy, build, envoy_origin, proxy_checkout

SHA = "d799381810ae54f1cccb2a9ae79d9c6191ca2c83"  # istio/proxy's commit of Istio 1.17.2
OTHER_SHA = "e1222b5645a29ad3d02b280797ac1219dd88cfbc"  # 1.17.8's
NAME = f"envoy-debug-{SHA}"


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """The two commands of a prebuilt stack as the program renders them."""
    evaluation = evaluate("dev", "envoySource=prebuilt")
    return {name: resource(evaluation, f"envoy-{name}")["inputs"] for name in ("fetch", "source")}


@pytest.fixture(scope="module")
def envoy(module_tmp):
    for tool in ("curl", "tar", "readelf"):
        require_tool(tool)
    return build(module_tmp("envoy"))


@pytest.fixture
def bucket(tmp_path, envoy) -> Path:
    folder = tmp_path / "bucket"
    publish(folder, SHA, envoy.elf, envoy.dwp)
    return folder


def fetch(rendered, cache: Path, base_url: str, sha: str = SHA) -> subprocess.CompletedProcess:
    return run_rendered(rendered["fetch"], BASE_URL=base_url, SHA=sha, DEST_DIR=str(cache))


def kept(cache: Path, sha: str = SHA) -> list[str]:
    """Every file the download left in the cache for this commit, but its lock."""
    folder = cache / sha
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".lock") if folder.exists() else []


# --- the download -----------------------------------------------------------------------------------------------


def test_the_stack_fetches_with_its_own_script_from_istios_bucket_by_the_checked_out_commit(rendered):
    fetch_inputs = rendered["fetch"]
    assert fetch_inputs["stdin"] == "".join((ROOT / "components/scripts" / name).read_text()
                                            for name in ("elf-facts.sh", "fetch-prebuilt-envoy.sh"))
    env = fetch_inputs["environment"]
    assert env["BASE_URL"] == "https://storage.googleapis.com/istio-build/proxy"
    assert env["DEST_DIR"] == "/home/.cache/istio-proxy-debug/prebuilt"
    assert set(env) == {"BASE_URL", "SHA", "DEST_DIR"}


def test_first_run_downloads_both_files_side_by_side_and_reads_what_the_debugger_needs(rendered, bucket, envoy,
                                                                                      tmp_path):
    cache = tmp_path / "cache"
    with Origin(bucket) as origin:
        done = fetch(rendered, cache, origin.url)
        assert done.returncode == 0, done.stderr
        assert [(r.method, r.path) for r in origin.requests] == [
            ("GET", f"/{NAME}.sha256"), ("GET", f"/{NAME}.tar.gz"), ("HEAD", f"/{NAME}.dwp"), ("GET", f"/{NAME}.dwp")]
    folder = cache / SHA
    assert kept(cache) == ["envoy", "envoy.dwp"], "nothing else: no archive, no partial file"
    assert (folder / "envoy").read_bytes() == envoy.elf.read_bytes()
    assert (folder / "envoy").stat().st_mode & 0o777 == 0o755
    assert (folder / "envoy.dwp").read_bytes() == envoy.dwp.read_bytes()
    result = parse_fetch_result(done.stdout)
    assert result.elf == str(folder / "envoy") and result.dwp == str(folder / "envoy.dwp")
    notes = subprocess.run(["readelf", "-n", str(envoy.elf)], capture_output=True, text=True, check=True).stdout
    assert f"Build ID: {result.build_id}" in notes
    # The prefixes the debug info records: bazel's /proc/self/cwd (three units), then the sandbox root one unit
    # was built in.
    assert result.prefixes == ("/proc/self/cwd", envoy.sandbox_root)


def objcopy_text(elf: Path, folder: Path) -> str:
    """binutils' own view of the ELF's .text bytes, by SHA-256."""
    out = folder / f"{elf.name}.text"
    subprocess.run(["objcopy", "--dump-section", f".text={out}", str(elf), str(out) + ".elf"], check=True)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_the_report_has_the_elfs_text_digest_as_binutils_reads_the_section(rendered, bucket, envoy, tmp_path):
    with Origin(bucket) as origin:
        done = fetch(rendered, tmp_path / "cache", origin.url)
    assert done.returncode == 0, done.stderr
    assert parse_fetch_result(done.stdout).text_digest == objcopy_text(envoy.elf, tmp_path)


@pytest.fixture(scope="module")
def symbols_fetch() -> dict:
    """attachTo's download: the release's envoy-symbol-<SHA>, which a bucket may not have."""
    evaluation = evaluate("dev", "attachTo=default/app-0", "nodeAccess=kubernetes", "nodes=", "registryHost=",
                          "targetNodeAddress=", "envoySource=prebuilt")
    return resource(evaluation, "release-envoy-fetch")["inputs"]


def test_attach_to_fetches_the_releases_symbols_and_a_missing_one_is_no_error(symbols_fetch, envoy, tmp_path):
    env = symbols_fetch["environment"]
    assert (env["ARTIFACT"], env["MISSING_OK"], env["DEST_DIR"]) == (
        "envoy-symbol", "true", "/home/.cache/istio-proxy-debug/symbols")
    bucket = tmp_path / "bucket"
    publish(bucket, SHA, envoy.elf, envoy.dwp, name="envoy-symbol")
    cache = tmp_path / "cache"
    with Origin(bucket) as origin:
        found = run_rendered(symbols_fetch, BASE_URL=origin.url, SHA=SHA, DEST_DIR=str(cache))
        missing = run_rendered(symbols_fetch, BASE_URL=origin.url, SHA=OTHER_SHA, DEST_DIR=str(cache))
    assert found.returncode == 0, found.stderr
    assert parse_fetch_result(found.stdout).text_digest == objcopy_text(envoy.elf, tmp_path)
    assert (cache / SHA / "envoy-symbol").read_bytes() == envoy.elf.read_bytes()
    assert (cache / SHA / "envoy-symbol.dwp").read_bytes() == envoy.dwp.read_bytes()
    assert missing.returncode == 0, missing.stderr
    result = parse_fetch_result(missing.stdout)
    assert (result.elf, result.missing) == ("", f"{origin.url}/envoy-symbol-{OTHER_SHA}.sha256 (HTTP 404)")
    assert kept(cache, OTHER_SHA) == []


def test_a_second_run_sends_no_request_at_all(rendered, bucket, tmp_path):
    cache = tmp_path / "cache"
    with Origin(bucket) as origin:
        first = fetch(rendered, cache, origin.url)
        assert first.returncode == 0, first.stderr
        origin.requests.clear()
        again = fetch(rendered, cache, origin.url)
        assert again.returncode == 0, again.stderr
        assert origin.requests == []
    assert again.stdout == first.stdout


def test_another_commit_downloads_once_beside_the_first(rendered, bucket, envoy, tmp_path):
    publish(bucket, OTHER_SHA, envoy.elf, envoy.dwp)
    cache = tmp_path / "cache"
    with Origin(bucket) as origin:
        assert fetch(rendered, cache, origin.url).returncode == 0
        origin.requests.clear()
        assert fetch(rendered, cache, origin.url, sha=OTHER_SHA).returncode == 0
        assert {r.path for r in origin.requests} == {f"/envoy-debug-{OTHER_SHA}.{ext}" for ext in ("sha256", "tar.gz",
                                                                                                     "dwp")}
    assert kept(cache) == kept(cache, OTHER_SHA) == ["envoy", "envoy.dwp"]


def test_a_commit_the_bucket_does_not_have_fails_with_the_url_and_the_fix(rendered, bucket, tmp_path):
    cache = tmp_path / "cache"
    with Origin(bucket) as origin:
        done = fetch(rendered, cache, origin.url, sha=OTHER_SHA)
    assert done.returncode != 0
    assert f"{origin.url}/envoy-debug-{OTHER_SHA}.sha256" in done.stderr
    assert "HTTP 404" in done.stderr
    assert "set envoySource to build" in done.stderr
    assert kept(cache, OTHER_SHA) == []


def test_a_wrong_checksum_fails_naming_the_file_and_keeps_nothing(rendered, bucket, tmp_path):
    (bucket / f"{NAME}.sha256").write_text(f"{'0' * 64}  /home/prow/{NAME}.tar.gz\n")
    cache = tmp_path / "cache"
    with Origin(bucket) as origin:
        done = fetch(rendered, cache, origin.url)
    assert done.returncode != 0
    assert f"{NAME}.tar.gz: its sha256 is" in done.stderr and "corrupt" in done.stderr
    assert kept(cache) == [], "no ELF, no partial folder: the next run starts clean"


def test_a_tar_gz_cut_off_in_transfer_keeps_nothing_and_the_next_run_succeeds(rendered, bucket, tmp_path):
    cache = tmp_path / "cache"
    size = (bucket / f"{NAME}.tar.gz").stat().st_size
    with Origin(bucket, cut={f"{NAME}.tar.gz": size // 2}) as origin:
        done = fetch(rendered, cache, origin.url)
        assert done.returncode != 0
        assert f"{NAME}.tar.gz: the transfer failed (curl exit 18); nothing was kept" in done.stderr
        assert kept(cache) == []
        again = fetch(rendered, cache, origin.url)
    assert again.returncode == 0, again.stderr
    assert kept(cache) == ["envoy", "envoy.dwp"]


def test_what_a_killed_run_left_of_an_extraction_is_removed_not_used(rendered, bucket, envoy, tmp_path):
    cache = tmp_path / "cache"
    leftover = cache / SHA / ".envoy.partial.kill9x" / "tree" / "usr" / "local" / "bin"
    leftover.mkdir(parents=True)
    (leftover / "envoy").write_bytes(b"half an ELF")
    with Origin(bucket) as origin:
        done = fetch(rendered, cache, origin.url)
    assert done.returncode == 0, done.stderr
    assert kept(cache) == ["envoy", "envoy.dwp"]
    assert (cache / SHA / "envoy").read_bytes() == envoy.elf.read_bytes()


def test_a_dwp_cut_off_in_transfer_is_resumed_by_the_next_run(rendered, bucket, envoy, tmp_path):
    cache = tmp_path / "cache"
    size = envoy.dwp.stat().st_size
    with Origin(bucket, cut={f"{NAME}.dwp": size // 3}) as origin:
        done = fetch(rendered, cache, origin.url)
        assert done.returncode != 0
        assert f"{NAME}.dwp: the transfer broke off after {size // 3} of {size} bytes" in done.stderr
        assert "envoy.dwp" not in kept(cache), "a partial .dwp never gets the name lldb reads"
        origin.requests.clear()
        again = fetch(rendered, cache, origin.url)
        assert again.returncode == 0, again.stderr
        assert [(r.method, r.range) for r in origin.requests] == [("HEAD", None), ("GET", f"bytes={size // 3}-")]
    # Progress counts the whole file, the kept part too: where the transfer broke off, and complete once resumed.
    assert [p.percent for p in progress(done.stderr, f"{NAME}.dwp")][-1] == 33
    assert [p.percent for p in progress(again.stderr, f"{NAME}.dwp")][-1] == 100
    assert (cache / SHA / "envoy.dwp").read_bytes() == envoy.dwp.read_bytes()
    assert kept(cache) == ["envoy", "envoy.dwp"]


def test_a_dwp_that_changed_on_the_server_is_fetched_whole_not_spliced(rendered, bucket, envoy, tmp_path):
    cache = tmp_path / "cache"
    size = envoy.dwp.stat().st_size
    with Origin(bucket, cut={f"{NAME}.dwp": size // 3}) as origin:
        assert fetch(rendered, cache, origin.url).returncode != 0
        # The object is republished (another ETag): the kept part is of the old one.
        (bucket / f"{NAME}.dwp").write_bytes(envoy.dwp.read_bytes()[::-1])
        origin.requests.clear()
        done = fetch(rendered, cache, origin.url)
        assert [r.range for r in origin.requests if r.method == "GET"] == [None]
    # Fetched whole from the start (not the old part + the new), it matches what the server states; being no DWARF
    # package, it is named and not kept.
    assert done.returncode != 0 and f"{NAME}.dwp holds no .debug_info.dwo section" in done.stderr
    assert kept(cache) == ["envoy"]


def test_a_dwp_whose_md5_is_not_the_servers_fails_naming_it_and_keeps_nothing(rendered, bucket, tmp_path):
    cache = tmp_path / "cache"
    with Origin(bucket, stated_md5={f"{NAME}.dwp": hashlib.md5(b"something else").digest()}) as origin:
        done = fetch(rendered, cache, origin.url)
    assert done.returncode != 0
    assert f"{NAME}.dwp: its MD5 is" in done.stderr
    assert kept(cache) == ["envoy"], "the verified ELF stays; the .dwp, its partial and its notes do not"


def test_without_an_md5_from_the_server_the_dwp_is_checked_by_its_size(rendered, bucket, envoy, tmp_path):
    cache = tmp_path / "cache"
    with Origin(bucket, md5=False) as origin:
        done = fetch(rendered, cache, origin.url)
    assert done.returncode == 0, done.stderr
    assert (cache / SHA / "envoy.dwp").read_bytes() == envoy.dwp.read_bytes()


# binutils 2.35 (Debian 11) reads no DWARF 5 skeleton unit: it warns and prints none.
OLD_READELF = """#!/bin/sh
case "$*" in
  *--debug-dump=info*) echo "readelf: Warning: CU at offset 0 contains corrupt or unsupported unit type: 4." >&2 ;;
  *) exec {readelf} "$@" ;;
esac
"""


def tools_folder(tmp_path: Path, **scripts: str) -> str:
    """A PATH with these stand-ins first."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_where_readelf_reads_no_dwarf_5_skeleton_llvm_dwarfdump_does(rendered, bucket, envoy, tmp_path):
    require_tool("llvm-dwarfdump")
    path = tools_folder(tmp_path, readelf=OLD_READELF.format(readelf=shutil.which("readelf")))
    with Origin(bucket) as origin:
        done = run_rendered(rendered["fetch"], BASE_URL=origin.url, SHA=SHA, DEST_DIR=str(tmp_path / "cache"),
                            PATH=path)
    assert done.returncode == 0, done.stderr
    assert parse_fetch_result(done.stdout).prefixes == ("/proc/self/cwd", envoy.sandbox_root)


def test_where_nothing_reads_them_the_error_says_what_to_install(rendered, bucket, tmp_path):
    path = tools_folder(tmp_path, **{"readelf": OLD_READELF.format(readelf=shutil.which("readelf")),
                                     "llvm-dwarfdump-99": "#!/bin/sh\nexit 1\n"})
    with Origin(bucket) as origin:
        done = run_rendered(rendered["fetch"], BASE_URL=origin.url, SHA=SHA, DEST_DIR=str(tmp_path / "cache"),
                            PATH=path)
    assert done.returncode != 0
    assert "reads DWARF 5 skeleton units; install a newer binutils (2.40 reads them), or llvm" in done.stderr


def test_a_file_url_is_read_like_the_bucket(rendered, bucket, envoy, tmp_path):
    cache = tmp_path / "cache"
    done = fetch(rendered, cache, f"file://{bucket}")
    assert done.returncode == 0, done.stderr
    assert (cache / SHA / "envoy.dwp").read_bytes() == envoy.dwp.read_bytes()
    missing = fetch(rendered, cache, f"file://{bucket}", sha=OTHER_SHA)
    assert missing.returncode != 0 and "no such file" in missing.stderr and "envoySource to build" in missing.stderr


def test_the_cache_survives_and_nothing_is_requested_even_with_the_server_gone(rendered, bucket, tmp_path):
    cache = tmp_path / "cache"
    with Origin(bucket) as origin:
        assert fetch(rendered, cache, origin.url).returncode == 0
    again = fetch(rendered, cache, "http://127.0.0.1:9")  # the discard port: nothing answers there
    assert again.returncode == 0, again.stderr


# --- progress ---------------------------------------------------------------------------------------------------

# The throttled link: a download of about 12 s a file (the first MiB is sent at once), for a line every 5 s.
RATE = 512 * 1024
PAD = 6 << 20
INTERVAL = 5.0
UNITS = {"kB": 1e3, "MB": 1e6, "GB": 1e9}
# "envoy-debug-<sha>.dwp: 412 MB of 1.9 GB (21 %), 103 MB/s", or without " of …" where no size is stated.
PROGRESS = re.compile(r"(?P<file>envoy-debug-[0-9a-f]{40}\.(?:tar\.gz|dwp)): (?P<bytes>[0-9.]+ [kMG]B)"
                      r"(?: of (?P<total>[0-9.]+ [kMG]B) \((?P<percent>[0-9]+) %\))?, (?P<rate>[0-9.]+ [kMG]B)/s")


@dataclass(frozen=True)
class Progress:
    """One progress line: when it arrived (time.monotonic()), and what it says, in bytes."""

    at: float
    bytes: float
    total: float | None
    percent: int | None
    rate: float


def amount(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def progress(lines, file: str) -> list[Progress]:
    """The progress lines about `file` among `lines` (text, or (arrival, line) pairs), in order."""
    if isinstance(lines, str):
        lines = [(0.0, line) for line in lines.splitlines()]
    found = []
    for at, line in lines:
        match = PROGRESS.search(line)
        if match and match["file"] == file:
            found.append(Progress(at, amount(match["bytes"]), match["total"] and amount(match["total"]),
                                  match["percent"] and int(match["percent"]), amount(match["rate"])))
    return found


def padded(envoy: PublishedEnvoy, folder: Path, elf: int, dwp: int) -> PublishedEnvoy:
    """The synthetic Envoy made bigger by incompressible bytes after its ELF and its .dwp (readelf, lldb and the
    script read both by their headers; the tail is never read), for a download that lasts."""
    folder.mkdir()
    noise = random.Random(0).randbytes(max(elf, dwp))
    (folder / "envoy").write_bytes(envoy.elf.read_bytes() + noise[:elf])
    (folder / "envoy.dwp").write_bytes(envoy.dwp.read_bytes() + noise[:dwp])
    return PublishedEnvoy(elf=folder / "envoy", dwp=folder / "envoy.dwp", sandbox_root=envoy.sandbox_root)


@dataclass
class Streamed:
    returncode: int
    stdout: str
    # Every stderr line with its arrival (time.monotonic()).
    stderr: list[tuple[float, str]]


def timed_lines(process: subprocess.Popen, stream, timeout: float) -> list[tuple[float, str]]:
    """Every line of `stream` (a pipe from `process`, started with start_new_session=True) with its arrival
    (time.monotonic()), read in a thread to its end. If the end has not come within `timeout` s, the process's
    whole group is killed (whatever still holds the pipe) and the test fails with the last lines that came."""
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in stream:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        reader.join(10)
        pytest.fail(f"{process.args[0]}'s output did not end within {timeout:.0f} s; its last lines:\n"
                    + "\n".join(line for _, line in lines[-40:]))
    return lines


def stream_rendered(inputs: dict, timeout: float = 300, **values: str) -> Streamed:
    """run_rendered, with stderr read line by line as it comes (to its end within `timeout` s)."""
    assert set(values) <= set(inputs["environment"]), set(values) - set(inputs["environment"])
    env = {**os.environ, **inputs["environment"], **values}
    with subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, text=True, start_new_session=True) as process:
        process.stdin.write(inputs["stdin"])
        process.stdin.close()
        lines = timed_lines(process, process.stderr, timeout)
        # The key=value report is small: the pipe holds it until the script is done.
        stdout = process.stdout.read()
        returncode = process.wait(timeout=60)
    return Streamed(returncode, stdout, lines)


def test_a_slow_download_reports_each_files_progress_on_stderr_while_it_runs(rendered, envoy, tmp_path):
    bucket = tmp_path / "bucket"
    big = padded(envoy, tmp_path / "big", elf=PAD, dwp=PAD)
    files = publish(bucket, SHA, big.elf, big.dwp)
    cache = tmp_path / "cache"
    with Origin(bucket, rate=RATE) as origin:
        done = stream_rendered(rendered["fetch"], BASE_URL=origin.url, SHA=SHA, DEST_DIR=str(cache))
    text = "\n".join(line for _, line in done.stderr)
    assert done.returncode == 0, text
    finished = {r.path: r.finished for r in origin.requests if r.method == "GET"}
    for ext in ("tar.gz", "dwp"):
        lines = progress(done.stderr, f"{NAME}.{ext}")
        size = files[ext].stat().st_size
        started = next(at for at, line in done.stderr if line == f"downloading {origin.url}/{NAME}.{ext}")
        ended = finished[f"/{NAME}.{ext}"]
        assert ended - started > 10, f"the throttled {ext} took {ended - started:.1f} s: too short to tell"
        # Lines every INTERVAL while it downloads, the first well before the end, then one as it ends. The bounds
        # leave room for a stall of a second or two (of the script, which delays a line, or of this reader, which
        # moves a line's arrival between two gaps), and still fail a line every 2 s, or every 10 s, or only one
        # at the end, and a last line that is the next tick (INTERVAL after the end) rather than the end's own.
        assert len(lines) >= 3, text
        assert INTERVAL - 1.5 <= lines[0].at - started <= INTERVAL + 2.5, text
        assert ended - lines[0].at > 4, text
        gaps = [later.at - earlier.at for earlier, later in pairwise(lines[:-1])]
        assert all(INTERVAL - 2 <= gap <= INTERVAL + 3 for gap in gaps), (gaps, text)
        assert abs(lines[-1].at - ended) < 3, text
        # What each says: more and more of the size the server states (in whole MB), all of it at the end, at
        # about the link's rate (the first MiB comes at once).
        assert all(line.total == pytest.approx(size, abs=1e6) for line in lines), text
        # (In whole MB, two lines may show the same size: their percentages differ.)
        assert [line.percent for line in lines] == sorted({line.percent for line in lines}), text
        assert [line.bytes for line in lines] == sorted(line.bytes for line in lines), text
        assert all(line.percent < 100 for line in lines[:-1]) and lines[-1].percent == 100, text
        assert lines[-1].bytes == lines[-1].total, text
        assert RATE * 0.8 < lines[-1].rate < RATE * 1.6, text
    # stdout is still only the report the program parses.
    assert parse_fetch_result(done.stdout).elf == str(cache / SHA / "envoy")
    assert all(line.split("=", 1)[0] in {"elf", "dwp", "buildId", "compDirs", "sandboxRoots", "textDigest"}
               for line in done.stdout.splitlines()), done.stdout

    again = run_rendered(rendered["fetch"], BASE_URL="http://127.0.0.1:9", SHA=SHA, DEST_DIR=str(cache))
    assert again.returncode == 0, again.stderr
    assert again.stderr == "", "a cached file is not downloaded: no progress, no line at all"


def test_where_the_server_states_no_size_progress_says_the_bytes_so_far(rendered, bucket, tmp_path):
    files = {ext: bucket / f"{NAME}.{ext}" for ext in ("tar.gz", "dwp")}
    with Origin(bucket, unsized={path.name for path in files.values()}) as origin:
        done = fetch(rendered, tmp_path / "cache", origin.url)
    assert done.returncode == 0, done.stderr
    for ext, path in files.items():
        (last,) = progress(done.stderr, f"{NAME}.{ext}")
        assert last.total is None and last.percent is None, done.stderr
        assert last.bytes == pytest.approx(path.stat().st_size, abs=1e3), done.stderr


# --- the Envoy checkout -----------------------------------------------------------------------------------------


@pytest.fixture
def sources(tmp_path) -> dict:
    require_tool("git")
    origin, pinned = envoy_origin(tmp_path / "envoy-origin")
    return {"origin": origin, "pinned": pinned, "proxy": proxy_checkout(tmp_path / "work", pinned),
            "envoy": tmp_path / "cache" / "envoy"}


def checkout(rendered, sources, tag: str = "1.30.3", repository: str | None = None) -> subprocess.CompletedProcess:
    values = {"SOURCE_DIR": str(sources["proxy"]), "ENVOY_DIR": str(sources["envoy"]), "SOURCE_TAG": tag}
    inputs = rendered["source"]
    # The stack passes ENVOY_REPOSITORY only when envoyRepository is set; here it is the test's origin.
    inputs = {**inputs, "environment": {**inputs["environment"], "ENVOY_REPOSITORY": ""}}
    return run_rendered(inputs, **values, ENVOY_REPOSITORY=repository or f"file://{sources['origin']}")


def test_the_checkout_step_reads_the_pins_from_istio_proxys_workspace(rendered):
    env = rendered["source"]["environment"]
    assert env == {"SOURCE_DIR": "/work", "ENVOY_DIR": "/home/.cache/istio-proxy-debug/envoy", "SOURCE_TAG": "1.17.2"}


def test_envoy_is_checked_out_at_the_pinned_commit_on_a_branch_named_after_the_release(rendered, sources):
    done = checkout(rendered, sources)
    assert done.returncode == 0, done.stderr
    result = parse_checkout_result(done.stdout)
    assert result.commit == sources["pinned"]
    assert result.external == f"external/{ENVOY_REPOSITORY_NAME}"
    envoy = sources["envoy"]
    assert git(envoy, "rev-parse", "HEAD") == sources["pinned"]
    assert git(envoy, "symbolic-ref", "--short", "HEAD") == "istio-1.30.3"
    assert (envoy / "source" / "common" / "worker.cc").exists()
    assert not (envoy / "NEWER").exists()
    assert git(envoy, "rev-list", "--count", "HEAD") == "1", "only the pinned commit is fetched"


def test_without_envoy_repository_the_workspaces_github_repository_is_named(rendered, sources):
    workspace = sources["proxy"] / "WORKSPACE"
    workspace.write_text(workspace.read_text().replace(sources["pinned"], "f" * 40))
    done = run_rendered(rendered["source"], SOURCE_DIR=str(sources["proxy"]), ENVOY_DIR=str(sources["envoy"]),
               SOURCE_TAG="1.30.3")
    assert done.returncode != 0
    # No network here: the fetch from GitHub fails, and says from where and what to set.
    assert f"cannot fetch Envoy commit {'f' * 40} from https://github.com/envoyproxy/envoy.git" in done.stderr
    assert "envoyRepository" in done.stderr


def test_a_second_checkout_fetches_nothing_and_keeps_local_work(rendered, sources, tmp_path):
    assert checkout(rendered, sources).returncode == 0
    (sources["envoy"] / "source" / "common" / "worker.cc").write_text("// my change\n")
    again = checkout(rendered, sources, repository=f"file://{tmp_path}/gone")
    assert again.returncode == 0, again.stderr
    assert (sources["envoy"] / "source" / "common" / "worker.cc").read_text() == "// my change\n"


def test_a_release_pinning_another_commit_gets_its_own_branch_and_the_old_one_stays(rendered, sources):
    assert checkout(rendered, sources, tag="1.30.2").returncode == 0
    origin = sources["origin"]
    (origin / "source" / "common" / "worker.cc").write_text("// newer envoy\n")
    git(origin, "commit", "-qam", "newer")
    newer = git(origin, "rev-parse", "HEAD")
    workspace = sources["proxy"] / "WORKSPACE"
    workspace.write_text(workspace.read_text().replace(sources["pinned"], newer))
    done = checkout(rendered, sources, tag="1.30.3")
    assert done.returncode == 0, done.stderr
    assert git(sources["envoy"], "rev-parse", "HEAD") == newer
    assert git(sources["envoy"], "rev-parse", "istio-1.30.2") == sources["pinned"]


def test_a_switch_that_would_lose_changes_is_refused(rendered, sources):
    assert checkout(rendered, sources, tag="1.30.2").returncode == 0
    (sources["envoy"] / "source" / "common" / "worker.cc").write_text("// my change\n")
    origin = sources["origin"]
    (origin / "source" / "common" / "worker.cc").write_text("// newer envoy\n")
    git(origin, "commit", "-qam", "newer")
    workspace = sources["proxy"] / "WORKSPACE"
    workspace.write_text(workspace.read_text().replace(sources["pinned"], git(origin, "rev-parse", "HEAD")))
    done = checkout(rendered, sources, tag="1.30.3")
    assert done.returncode != 0
    assert "without losing local changes" in done.stderr
    assert (sources["envoy"] / "source" / "common" / "worker.cc").read_text() == "// my change\n"


def test_a_folder_that_is_not_a_checkout_is_refused(rendered, sources):
    sources["envoy"].mkdir(parents=True)
    (sources["envoy"] / "notes.txt").write_text("mine\n")
    done = checkout(rendered, sources)
    assert done.returncode != 0 and "is not a git checkout" in done.stderr
    assert (sources["envoy"] / "notes.txt").read_text() == "mine\n"


def test_a_workspace_without_the_pins_is_named(rendered, sources):
    (sources["proxy"] / "WORKSPACE").write_text('workspace(name = "io_istio_proxy")\n')
    done = checkout(rendered, sources)
    assert done.returncode != 0 and "pins no ENVOY_SHA" in done.stderr
