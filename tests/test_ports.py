"""Ports the tests and the embedded broker pick for their servers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from common import ports
from common.ports import free_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="no Linux ephemeral port range to compare with")
def test_a_picked_port_is_never_one_an_outgoing_connection_could_take() -> None:
    # The CI failure this guards against: a NATS node's route port, picked by
    # bind(0) from the ephemeral range, became another connection's source port.
    low, high = (int(part) for part in RANGE.read_text().split())
    for _ in range(50):
        port = free_port()
        assert not low <= port <= high, f"{port} is in the ephemeral range {low}-{high}"
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
            server.listen()


def test_ports_handed_out_before_their_servers_start_are_not_handed_out_again() -> None:
    # A three-node cluster picks nine ports before any node binds one.
    picks = [free_port() for _ in range(500)]
    assert len(set(picks)) == len(picks)


def test_a_port_someone_listens_on_is_not_offered() -> None:
    ports._pick.seed(13)
    first_choice = free_port()
    ports._recent.clear()  # offered again if it were free
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first_choice))
        taken.listen()
        ports._pick.seed(13)  # the same candidates, in the same order
        assert free_port() != first_choice


def test_an_ipv6_host_gets_a_port_it_can_bind() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        port = free_port("::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    with socket.socket(socket.AF_INET6) as server:
        server.bind(("::1", port))
