"""A Debug Adapter Protocol client that drives a debug adapter (LLVM's lldb-dap) the way VS Code does: over the
adapter's stdin and stdout, `Content-Length`-framed JSON messages, requests answered by responses and events
arriving in between (https://microsoft.github.io/debug-adapter-protocol/overview).

VS Code's order for an attach configuration: `initialize`; then the `attach` request carrying the launch.json
configuration's own fields; on the adapter's `initialized` event, `setBreakpoints` per source and
`configurationDone`; the attach's response; then whatever the session shows (a `stopped` event, `stackTrace`).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Sequence


class DapError(AssertionError):
    pass


class DapClient:
    def __init__(self, command: Sequence[str], **popen):
        self._process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, **popen)
        self._seq = 0
        self._messages: queue.Queue[dict | None] = queue.Queue()
        # Everything the adapter said, in order, for a failure's message.
        self.transcript: list[dict] = []
        self._pending: list[dict] = []
        # The adapter's stderr, read as it comes (a pipe nobody reads would block it once full): for a failure's
        # message.
        self._stderr: list[bytes] = []
        self._stderr_reader = threading.Thread(target=self._stderr.extend, args=(self._process.stderr,),
                                               daemon=True)
        self._stderr_reader.start()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self._process.stdout
        while True:
            length = None
            while (line := stream.readline()) not in (b"\r\n", b""):
                if not line.endswith(b"\n"):
                    # Cut off: the adapter ended (or was ended) in the middle of a header.
                    line = b""
                    break
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = stream.read(length) if line and length is not None else b""
            # The adapter ended (or was ended by close()) mid-message: nothing more will come.
            if len(body) < (length or 1):
                self._messages.put(None)
                return
            self._messages.put(json.loads(body))

    def send(self, command: str, arguments: dict | None = None) -> int:
        self._seq += 1
        message = {"seq": self._seq, "type": "request", "command": command, "arguments": arguments or {}}
        body = json.dumps(message).encode()
        self._process.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self._process.stdin.flush()
        return self._seq

    def _next(self, deadline: float) -> dict:
        if self._pending:
            return self._pending.pop(0)
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise DapError(f"the adapter said nothing more before the time-out; so far: {self.said()}") from None
        if message is None:
            try:
                self._process.wait(timeout=10)
                self._stderr_reader.join(timeout=10)
                stderr = self.stderr()
            except subprocess.TimeoutExpired:
                stderr = f"(it still runs) {self.stderr()}"
            raise DapError(f"the adapter closed its output (exit {self._process.returncode}); it said: {self.said()}; "
                           f"stderr: {stderr[-2000:]}")
        self.transcript.append(message)
        return message

    def wait_for(self, predicate, what: str, timeout: float) -> dict:
        """The first message `predicate` accepts; the others stay queued, in order, for later waits."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                try:
                    message = self._next(deadline)
                except DapError as error:
                    raise DapError(f"waiting for {what}: {error}") from None
                if predicate(message):
                    return message
                skipped.append(message)
        finally:
            self._pending = skipped + self._pending

    def response(self, seq: int, timeout: float = 120) -> dict:
        """The response to request `seq`; a failed one raises with the adapter's message."""
        message = self.wait_for(lambda m: m.get("type") == "response" and m.get("request_seq") == seq,
                                f"the response to request {seq}", timeout)
        if not message.get("success"):
            raise DapError(f"{message.get('command')} failed: {message.get('message')} {message.get('body')}")
        return message

    def event(self, name: str, timeout: float = 120) -> dict:
        return self.wait_for(lambda m: m.get("type") == "event" and m.get("event") == name, f"the {name} event",
                             timeout)

    def request(self, command: str, arguments: dict | None = None, timeout: float = 120) -> dict:
        return self.response(self.send(command, arguments), timeout)

    def stderr(self) -> str:
        """What the adapter wrote to its stderr so far."""
        return b"".join(list(self._stderr)).decode(errors="replace")

    def said(self) -> str:
        """The adapter's output events and responses so far, shortened, for a failure's message."""
        lines = []
        for message in self.transcript:
            if message.get("event") == "output":
                lines.append(message["body"].get("output", "").rstrip())
            elif message.get("type") == "response":
                lines.append(f"<{message.get('command')}: {message.get('success')} {message.get('message', '')}>")
        return "\n".join(lines)[-4000:]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
