"""components/docker_daemon.py, the check a host stack makes before pulumi-docker's provider would fail: which
addresses it asks (the provider's own order), the one line it stops with, and its probe, run against real sockets
on loopback: servers that answer, refuse, stay silent or speak something else, and the tests' Docker engine.

The program stopping a real `pulumi preview` and `pulumi up` with that line is tests/test_engine_preview.py's."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.docker_daemon import DEFAULT_HOST, DockerHosts, docker_hosts, no_docker_message, probe

PING_REPLY = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"


# --- which addresses -----------------------------------------------------------------------------------------


def test_the_stacks_docker_host_comes_before_docker_host_in_the_environment():
    assert docker_hosts("tcp://127.0.0.1:2375", "unix:///run/other.sock", "/home/alice") == DockerHosts(
        ("tcp://127.0.0.1:2375",), "docker:host")


def test_docker_host_in_the_environment_is_the_only_address_tried():
    assert docker_hosts(None, "unix:///run/user/1000/docker.sock", "/home/alice") == DockerHosts(
        ("unix:///run/user/1000/docker.sock",), "DOCKER_HOST")


def test_with_no_host_set_the_default_socket_comes_first_then_docker_desktops():
    hosts = docker_hosts(None, None, "/home/alice")
    assert hosts.origin == "the default socket"
    assert hosts.addresses == ("unix:///var/run/docker.sock", "unix:///home/alice/.docker/run/docker.sock",
                               "unix:///home/alice/.docker/desktop/docker.sock")


def test_an_empty_setting_counts_as_unset_as_the_provider_reads_it():
    assert docker_hosts("", "", None) == DockerHosts((DEFAULT_HOST,), "the default socket")


# --- the message ---------------------------------------------------------------------------------------------


def test_the_message_is_one_line_naming_docker_the_address_its_origin_the_reason_and_the_fix():
    message = no_docker_message(DockerHosts(("unix:///nowhere.sock",), "DOCKER_HOST"), "no such socket")
    assert "\n" not in message
    assert message.startswith("Docker does not answer at unix:///nowhere.sock (DOCKER_HOST): no such socket.")
    assert "Start Docker" in message and "set DOCKER_HOST" in message and "docker:host" in message
    assert "also tried" not in message


def test_the_message_names_the_other_sockets_tried_after_the_default():
    hosts = docker_hosts(None, None, "/home/alice")
    message = no_docker_message(hosts, "connection refused")
    assert "\n" not in message
    assert message.startswith(f"Docker does not answer at {DEFAULT_HOST} (the default socket; also tried "
                              "unix:///home/alice/.docker/run/docker.sock, ")
    assert "connection refused" in message


# --- the probe, on real sockets ------------------------------------------------------------------------------


@contextlib.contextmanager
def server(listener: socket.socket, reply: bytes | None) -> Iterator[list[bytes]]:
    """Accepts connections on `listener` in a thread; sends `reply` to each (None: says nothing, holds the
    connection open until the test ends). Yields what the clients sent."""
    received: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                received.append(connection.recv(1024))
                if reply is None:
                    done.wait()
                else:
                    connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        done.set()
        thread.join(timeout=10)
        listener.close()


def unix_listener(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    return listener


def loopback_listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_a_daemon_answering_the_ping_on_a_unix_socket_passes(tmp_path):
    path = tmp_path / "docker.sock"
    with server(unix_listener(path), PING_REPLY) as received:
        assert probe(f"unix://{path}") is None
    assert received and received[0].startswith(b"GET /_ping HTTP/1.0\r\n"), received


def test_a_daemon_answering_the_ping_on_tcp_passes():
    listener = loopback_listener()
    port = listener.getsockname()[1]
    with server(listener, PING_REPLY) as received:
        assert probe(f"tcp://127.0.0.1:{port}") is None
    assert received[0].startswith(b"GET /_ping ")


def test_a_tls_daemon_refusing_plain_http_still_answers():
    """What Go's TLS server (dockerd with --tlsverify) sends to a plain HTTP request: the daemon is there."""
    listener = loopback_listener()
    with server(listener, b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"):
        assert probe(f"tcp://127.0.0.1:{listener.getsockname()[1]}") is None


def test_a_socket_path_that_does_not_exist_is_named_so(tmp_path):
    assert probe(f"unix://{tmp_path / 'absent.sock'}") == "no such socket"


def test_a_unix_socket_nobody_listens_on_refuses(tmp_path):
    path = tmp_path / "stale.sock"
    unix_listener(path).close()  # the file stays, as a dead daemon's socket does
    assert path.exists()
    assert probe(f"unix://{path}") == "connection refused"


def test_a_loopback_port_nobody_listens_on_refuses():
    listener = loopback_listener()
    port = listener.getsockname()[1]
    listener.close()
    assert probe(f"tcp://127.0.0.1:{port}") == "connection refused"


def test_a_silent_listener_is_given_up_on_within_the_bound():
    listener = loopback_listener()
    with server(listener, None):
        started = time.monotonic()
        reason = probe(f"tcp://127.0.0.1:{listener.getsockname()[1]}", seconds=0.5)
        elapsed = time.monotonic() - started
    assert reason == "no answer within 0.5 s"
    # It waited for the bound it was given, and gave up then: not at once, and not at the default PROBE_SECONDS
    # (3 s) or never; the 2 s of room above the bound are for a stall of this machine, not of the probe.
    assert 0.4 < elapsed < 2.5, elapsed


def test_something_that_is_not_http_is_not_docker(tmp_path):
    path = tmp_path / "ssh.sock"
    with server(unix_listener(path), b"SSH-2.0-OpenSSH_9.2\r\n"):
        assert probe(f"unix://{path}") == "what answers there does not speak HTTP"


def test_addresses_the_provider_reaches_its_own_way_are_not_probed():
    """ssh:// goes through the ssh client (the provider does not ping it either); nothing listens on port 9."""
    assert probe("ssh://nobody@127.0.0.1:9") is None


def test_the_tests_docker_engine_answers_on_the_default_socket():
    if os.geteuid() != 0:
        pytest.skip("the tests' Docker engine runs as root")
    from tests.docker_engine import engine

    with engine():
        started = time.monotonic()
        assert probe(DEFAULT_HOST) is None
        # A ping of a running daemon takes milliseconds: well under the probe's bound (PROBE_SECONDS, 3 s), with
        # room for a stall of this machine.
        assert time.monotonic() - started < 2, "a ping of a running daemon takes milliseconds"
