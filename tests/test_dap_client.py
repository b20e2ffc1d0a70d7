"""The tests' DAP client (tests/dap_client.py) against adapters that end badly: whatever the adapter wrote last,
the waiting test gets a DapError that says so, never a reader thread's traceback."""

from __future__ import annotations

import threading

import pytest

from tests.dap_client import DapClient, DapError

BODY = '{"seq":1,"type":"event","event":"initialized"}'
FRAMED = f"Content-Length: {len(BODY)}\\r\\n\\r\\n{BODY}"


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions raised in any thread while the test runs."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


@pytest.mark.parametrize("last_words", ["Content-Length: ", "Content-Length: 40\\r\\n\\r\\n{\"seq\"", ""],
                         ids=["cut-in-a-header", "cut-in-a-body", "nothing-more"])
def test_an_adapter_that_ends_mid_message_is_reported_as_closed(thread_errors, last_words):
    client = DapClient(["sh", "-c", f"printf '{FRAMED}{last_words}'"])
    try:
        assert client.event("initialized", timeout=10)["seq"] == 1
        with pytest.raises(DapError, match="the adapter closed its output"):
            client.event("stopped", timeout=10)
    finally:
        client.close()
    assert thread_errors == []
