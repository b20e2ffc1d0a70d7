"""Stops a stack with Docker resources in one line when no Docker daemon answers, before any resource exists.

pulumi-docker's provider pings the daemon when it is configured, for a preview too and whatever
`docker:disableDockerDaemonCheck` says; with none answering it fails ("failed to connect to any docker daemon")
and the Python program adds a page of traceback. So the program asks first, where the provider will:
`docker_hosts` and `no_docker_message` are pure (which addresses, in the provider's order; the message), `probe`
sends one bounded `GET /_ping`, and `require_docker` raises the message as a `pulumi.RunError`, which the CLI
prints without a stack trace. Nothing here is a resource input.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pulumi

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Docker Desktop's own sockets, which the provider tries after the default when no host is set (macOS, Linux).
DESKTOP_SOCKETS = ("unix://{home}/.docker/run/docker.sock", "unix://{home}/.docker/desktop/docker.sock")
# A daemon answers a ping in milliseconds; one that takes seconds would fail the provider anyway.
PROBE_SECONDS = 3.0
DOCKER_TCP_PORT = 2375


@dataclass(frozen=True)
class DockerHosts:
    """The addresses the provider would try, in its order, and where the first came from."""

    addresses: tuple[str, ...]
    origin: str


def docker_hosts(config_host: str | None, env_host: str | None, home: str | None) -> DockerHosts:
    """pulumi-docker's choice (5.1.0, provider/provider.go and image.go): the stack's `docker:host`, else
    DOCKER_HOST, else the default socket and then Docker Desktop's in the user's home."""
    if config_host:
        return DockerHosts((config_host,), "docker:host")
    if env_host:
        return DockerHosts((env_host,), "DOCKER_HOST")
    desktop = tuple(s.format(home=home) for s in DESKTOP_SOCKETS) if home else ()
    return DockerHosts((DEFAULT_HOST, *desktop), "the default socket")


def no_docker_message(hosts: DockerHosts, reason: str) -> str:
    """One line: Docker, the address tried and where it came from, why it failed, and what to do."""
    first, *others = hosts.addresses
    also = f"; also tried {', '.join(others)}" if others else ""
    return (f"Docker does not answer at {first} ({hosts.origin}{also}): {reason}. Start Docker, or set DOCKER_HOST "
            "(or docker:host) to the address of a running one; a stack with placement host needs it even to preview.")


def _endpoint(address: str) -> tuple[socket.AddressFamily, str | tuple[str, int]] | None:
    """Where to connect for a unix or tcp address; None for the ones the provider reaches its own way (ssh,
    npipe), which it does not ping either."""
    scheme, _, rest = address.partition("://")
    if scheme == "unix":
        return socket.AF_UNIX, rest
    if scheme in ("tcp", "http", "https"):
        parts = urlsplit(address)
        family = socket.AF_INET6 if parts.hostname and ":" in parts.hostname else socket.AF_INET
        return family, (parts.hostname or "localhost", parts.port or DOCKER_TCP_PORT)
    return None


def probe(address: str, seconds: float = PROBE_SECONDS) -> str | None:
    """None when something answers `GET /_ping` at `address` with HTTP (a TLS daemon answers plain HTTP with a
    400, still an answer), else why not; connect, send and receive together take at most `seconds`."""
    endpoint = _endpoint(address)
    if endpoint is None:
        return None
    family, target = endpoint
    deadline = time.monotonic() + seconds
    try:
        with socket.socket(family, socket.SOCK_STREAM) as connection:
            connection.settimeout(seconds)
            connection.connect(target)
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            reply = connection.recv(64)
    except FileNotFoundError:
        return "no such socket"
    except ConnectionRefusedError:
        return "connection refused"
    except PermissionError:
        return "permission denied (is this user in the docker group?)"
    except TimeoutError:
        return f"no answer within {seconds:g} s"
    except OSError as error:
        return error.strerror or str(error)
    return None if reply.startswith(b"HTTP/") else "what answers there does not speak HTTP"


def require_docker() -> None:
    """Stops the program with `no_docker_message` unless one of the addresses the provider would try answers."""
    hosts = docker_hosts(pulumi.Config("docker").get("host"), os.environ.get("DOCKER_HOST"),
                         os.environ.get("HOME"))
    reasons = []
    for address in hosts.addresses:
        reason = probe(address)
        if reason is None:
            return
        reasons.append(reason)
    raise pulumi.RunError(no_docker_message(hosts, reasons[0]))
