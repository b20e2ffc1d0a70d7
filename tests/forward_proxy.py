"""A plain-HTTP forward proxy for the tests' Docker engine (tests/docker_engine.py): apt in builds and
containers fetches Debian's archive through it. Only GET and HEAD of absolute http:// URLs; nothing else.

    python3 tests/forward_proxy.py ADDRESS PORT      (prints "ready PORT" once it listens)

PORT 0 lets the kernel choose a free one: the "ready" line says which.
"""

from __future__ import annotations

import http.client
import shutil
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self.send_error(400, "only absolute http:// URLs")
            return
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        path = url.path + (f"?{url.query}" if url.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream.request(self.command, path or "/", headers=headers)
        response = upstream.getresponse()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            shutil.copyfileobj(response, self.wfile)
        self.close_connection = True
        upstream.close()

    do_GET = _forward
    do_HEAD = _forward

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def main() -> None:
    server = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Proxy)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
