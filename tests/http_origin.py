"""A real HTTP server on loopback (or a test link) standing in for Istio's bucket
(storage.googleapis.com/istio-build/proxy).

It serves a folder's files as Google Cloud Storage serves objects: GET and HEAD, Content-Length, an ETag,
byte ranges (`Range: bytes=N-`, honoured only while `If-Range` names the current ETag, else the whole object
with 200), 404 for what is not there, and an `x-goog-hash: crc32c=…,md5=…` header (md5 left out with
`md5=False`, as GCS does for composite objects; `stated_md5[name]` states another digest; crc32c is a dummy,
nothing here checks it). Every request is recorded. Failures on demand: `cut[name] = n` sends the full
Content-Length and drops the connection after n bytes of the body, once. `rate` (bytes/s) throttles bodies, for
benchmarks of a user's link and for progress reports. `unsized` names files served without a Content-Length (the
body ends when the connection closes), as a server that states no size. A request records when its whole body was
sent (`finished`, time.monotonic()).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    finished: float | None = None


@dataclass
class Origin:
    root: Path
    md5: bool = True
    rate: float | None = None
    cut: dict[str, int] = field(default_factory=dict)
    unsized: set[str] = field(default_factory=set)
    stated_md5: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # Loopback, or an address of a network namespace's link for clients behind it (containers of the tests'
    # Docker engine reach the root namespace at tests/docker_engine.py's HOST_SIDE).
    host: str = "127.0.0.1"

    def __post_init__(self):
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                request = Request(self.command, self.path, self.headers.get("Range"))
                origin.requests.append(request)
                name = self.path.lstrip("/")
                path = origin.root / name
                if "/" in name or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                etag, md5 = origin.identity(path)
                start = 0
                wanted = self.headers.get("Range", "")
                if_range = self.headers.get("If-Range")
                if wanted.startswith("bytes=") and wanted.endswith("-") and if_range in (None, etag):
                    start = int(wanted[len("bytes="):-1])
                if start >= size > 0:
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if name in origin.unsized:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(size - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                hashes = "crc32c=AAAAAA=="
                if origin.md5:
                    stated = origin.stated_md5.get(name)
                    hashes += f",md5={base64.b64encode(stated).decode() if stated else md5}"
                self.send_header("x-goog-hash", hashes)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                if body and self._body(path, start, size, origin.cut.pop(name, None)):
                    request.finished = time.monotonic()

            def _body(self, path: Path, start: int, size: int, cut_after: int | None) -> bool:
                """Sends the body (or its first `cut_after` bytes); whether all of it went out."""
                end = size if cut_after is None else min(size, start + cut_after)
                with path.open("rb") as f:
                    offset = start
                    began = time.monotonic()
                    while offset < end:
                        count = min(CHUNK, end - offset)
                        if origin.rate:
                            # Stay on the rate's schedule: sleep until this chunk is due.
                            due = began + (offset - start) / origin.rate
                            time.sleep(max(0.0, due - time.monotonic()))
                        try:
                            sent = self.connection.sendfile(f, offset, count)
                        except (BrokenPipeError, ConnectionResetError):
                            return False
                        if not sent:
                            return False
                        offset += sent
                if cut_after is not None:
                    # Drop the connection mid-body: the client sees fewer bytes than Content-Length.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return end == size
                return True

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._identities: dict[tuple[Path, float, int], tuple[str, str]] = {}

    def identity(self, path: Path) -> tuple[str, str]:
        """The object's ETag and base64 MD5, as GCS states them (computed once per version of the file)."""
        stat = path.stat()
        key = (path, stat.st_mtime, stat.st_size)
        if key not in self._identities:
            digest = hashlib.md5()
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            self._identities[key] = (f'"{digest.hexdigest()}"', base64.b64encode(digest.digest()).decode())
        return self._identities[key]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Origin:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def publish(root: Path, sha: str, elf: Path, dwp: Path, name: str = "envoy-debug") -> dict[str, Path]:
    """Publishes an Envoy as istio/proxy's release-binary.sh does: <name>-<sha>.tar.gz (envoy-debug, or
    envoy-symbol, the release's symbols) holding usr/local/bin/envoy (mode 0755, as pkg_tar's mode = "0755" makes
    it), its sha256sum line, and the .dwp."""
    import tarfile

    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"{name}-{sha}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tar.gettarinfo(str(elf), arcname="./usr/local/bin/envoy")
        info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "", ""
        with elf.open("rb") as f:
            tar.addfile(info, f)
    checksum = root / f"{name}-{sha}.sha256"
    # sha256sum's own line, with the path release-binary.sh hashed it at ($HOME of its CI).
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    checksum.write_text(f"{digest}  /home/prow/{name}-{sha}.tar.gz\n")
    package = root / f"{name}-{sha}.dwp"
    package.write_bytes(dwp.read_bytes())
    return {"tar.gz": archive, "sha256": checksum, "dwp": package}
