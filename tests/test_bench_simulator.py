"""``posture-monitor bench simulator``: simulated wearables through the bleak backend.

Only what the command reports is checked (figures exist and add up, every
wearable's packets reached its client); how fast is for the benchmark to
say, never a test.
"""

from __future__ import annotations

import argparse
import json

import pytest

from lab import bench


def test_bench_simulator_streams_every_wearable_through_bleak(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="posture-monitor bench")
    bench.configure_parser(parser)
    argv = ["simulator", "--wearables", "6", "--seconds", "3", "--profile-seconds", "1", "--json"]
    assert bench.run(parser.parse_args(argv)) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["wearables"] == 6
    # 6 wearables at 50 Hz in 10-sample packets for at least 3 s of scenario time.
    assert result["packets_received"] >= 6 * 5 * 3
    assert 0 < result["core_share_per_wearable"] < 1
    assert result["wearables_per_core"] == pytest.approx(1 / result["core_share_per_wearable"])
    stages = result["stages_s"]
    assert stages["physics (trajectory, sensor, noise, quantisation)"] > 0
    assert stages["packet encoding"] > 0 and stages["delivery (link, bleak, consumer)"] > 0
    assert result["physics_us_per_wearable_s"] > 0
    assert result["reference_physics_us_per_wearable_s"] > 0


def test_bench_simulator_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="posture-monitor bench")
    bench.configure_parser(parser)
    assert bench.run(parser.parse_args(["simulator", "--wearables", "0"])) == 2
    assert bench.run(parser.parse_args(["simulator", "--seconds", "1"])) == 2
    assert bench.run(parser.parse_args(["simulator", "--profile-seconds", "-1"])) == 2
    assert "--wearables" in capsys.readouterr().out
