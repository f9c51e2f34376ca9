"""``posture-monitor bench gateway``: the real gateway path over replayed wearables.

Only what the command reports is checked (figures exist and add up, the fall
arrives through a real broker); how fast is for the benchmark to say, never a
test.
"""

from __future__ import annotations

import argparse
import json

import pytest
from brokers import MOSQUITTO

from lab import bench

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs the mosquitto binary")


def test_bench_gateway_replays_wearables_through_the_gateway_to_a_broker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="posture-monitor bench")
    bench.configure_parser(parser)
    argv = ["gateway", "--wearables", "6", "--seconds", "15", "--json"]
    assert bench.run(parser.parse_args(argv)) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["wearables"] == 6
    # 6 wearables at 50 Hz in 10-sample packets for about 15 s.
    assert result["packets_delivered"] >= 6 * 5 * 12
    assert result["packets_dropped"] == 0
    assert 0 < result["cpu_share_per_wearable"] < 1
    # Wearable 0 replays the fall (impact 8 s in): its alert crossed the broker.
    assert result["falls_expected"] == 1 and result["falls_received"] == 1
    assert 0 < result["fall_latency_p50_s"] < 10


def test_bench_gateway_spreads_the_wearables_over_gateway_processes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="posture-monitor bench")
    bench.configure_parser(parser)
    argv = ["gateway", "--wearables", "6", "--seconds", "15", "--processes", "2", "--json"]
    assert bench.run(parser.parse_args(argv)) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["wearables"] == 6 and result["processes"] == 2
    # Every wearable was served by one of the two processes, none dropped.
    assert result["packets_delivered"] >= 6 * 5 * 12
    assert result["packets_dropped"] == 0
    assert 0 < result["cpu_share_per_wearable"] < 1
    # The fall, served by one shard's process, crossed the broker to the subscriber.
    assert result["falls_expected"] == 1 and result["falls_received"] == 1


def test_bench_gateway_rejects_bad_counts(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="posture-monitor bench")
    bench.configure_parser(parser)
    assert bench.run(parser.parse_args(["gateway", "--wearables", "0"])) == 2
    # 10 s used to be accepted, and always said "real time: NO" (no fall inside it).
    assert bench.run(parser.parse_args(["gateway", "--seconds", "10"])) == 2
    assert bench.run(parser.parse_args(["gateway", "--processes", "0"])) == 2
    out = capsys.readouterr().out
    assert "--wearables" in out and "--processes must be counts in 1..64" in out
    assert "--seconds must be in 15..3600 (a shorter run ends before the ward's first fall" in out


def test_the_shortest_run_allowed_times_the_wards_first_fall() -> None:
    from lab.gateway_bench import FALL_LOOK_S, MIN_SECONDS, ward_recordings

    impacts = [t for r in ward_recordings(MIN_SECONDS) for t in r.fall_impacts_s]
    assert impacts and min(impacts) + FALL_LOOK_S <= MIN_SECONDS
