"""``python -m lab.fused_rows``: the gravity filter and the fall rows apart and fused."""

from __future__ import annotations

import pytest

from lab.fused_rows import ARMS, arms, main
from posture.kernels.gravity import LANES


def test_every_arm_computes_the_same_bits_on_whole_and_partial_lane_blocks() -> None:
    # arms() compares the up directions, the gravity state, the rings and the
    # fall cursors of every arm with the engine's two kernels, bit for bit
    # (padded lanes aside), and raises on any difference.
    figures = arms(devices=LANES + 5, warm_s=1.0, seconds=1.0, gap_ms=0.0)
    assert list(figures) == list(ARMS)
    assert all(ns > 0.0 for ns in figures.values())


def test_the_command_prints_each_arm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--devices", "6", "--warm", "0.4", "--seconds", "0.4", "--gap-ms", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("gravity filter and fall rows, 6 devices, 10-sample blocks")
    assert "the same bits both ways, checked" in lines[0]
    assert [line.rsplit(None, 1)[0].strip() for line in lines[1:]] == list(ARMS)
    assert all(float(line.split()[-1]) > 0.0 for line in lines[1:])


def test_with_the_activity_features_the_laid_out_pass_computes_the_same_bits() -> None:
    # The flags and the features' state too (device last against blocks).
    figures = arms(devices=LANES + 5, warm_s=1.0, seconds=1.0, gap_ms=0.0, activity=True)
    assert list(figures) == [ARMS[0], ARMS[2]]
    assert all(ns > 0.0 for ns in figures.values())


def test_the_command_names_the_activity_stage_when_it_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--devices", "6", "--warm", "0.4", "--seconds", "0.4", "--activity"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("gravity filter, activity features and fall rows, 6 devices")
    assert [line.rsplit(None, 1)[0].strip() for line in lines[1:]] == [ARMS[0], ARMS[2]]
