"""Ports the tests and the embedded broker pick for their servers, and what
the NATS cluster helper says when one is taken all the same."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from nats_cluster import NATS_SERVER, NatsCluster

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


@pytest.mark.skipif(NATS_SERVER is None, reason="nats-server not installed")
async def test_a_cluster_node_that_cannot_bind_its_route_port_is_reported_not_waited_for(
    tmp_path: Path,
) -> None:
    # What the CI run met: n1's route port was taken when it started; the
    # cluster then waited out its readiness timeout on a dead node.
    cluster = NatsCluster(tmp_path, ready_timeout_s=120.0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cluster.nodes[0].route_port))
        taken.listen()
        with pytest.raises(RuntimeError, match="nats-server n1 exited") as failure:
            await cluster.start()
    assert "address already in use" in str(failure.value)
    assert not any(node.running for node in cluster.nodes)
