"""Dataset readers (lab/datasets.py) on tiny files written here, and on the
real datasets when ../shared/datasets (or $POSTURE_DATASETS) is present."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from lab.datasets import (
    SISFALL_NOMINAL_UP_SENSOR,
    DatasetError,
    iter_sisfall,
    list_broad,
    list_sisfall,
    parse_sisfall_name,
    read_broad,
    read_sisfall,
)

DATASETS = Path(
    os.environ.get("POSTURE_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)
SISFALL = DATASETS / "sisfall"
BROAD = DATASETS / "broad"

# 256 counts = 1 g (ADXL345, 32/8192 g per count); 16384 counts = 1000 °/s.
ROWS = [
    "  0, 256,   0, 16384,    0, -16384, 1, 2, 3;",
    "-256,   0, 128,     0, 8192,      0, 4, 5, 6;",
    "  12, -3, 512,     -1,    2,      3, 7, 8, 9;",
]


def write_sisfall(folder: Path, name: str, lines: list[str], *, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\r\n".join(lines) + "\r\n"  # the originals end lines with CR LF
    if gz:
        path = folder / f"{name}.txt.gz"
        with gzip.open(path, "wb") as fh:
            fh.write(text.encode("ascii"))
    else:
        path = folder / f"{name}.txt"
        path.write_text(text, encoding="ascii", newline="")
    return path


def test_sisfall_counts_become_g_and_dps(tmp_path: Path) -> None:
    rec = read_sisfall(write_sisfall(tmp_path / "SA01", "F05_SA01_R04", ROWS))
    assert (rec.code, rec.subject, rec.trial, rec.name) == ("F05", "SA01", 4, "F05_SA01_R04")
    assert rec.is_fall and rec.sample_rate_hz == 200.0 and rec.dropped_lines == 0
    np.testing.assert_allclose(rec.acc_g[0], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(rec.acc_g[1], [-1.0, 0.0, 0.5])
    np.testing.assert_allclose(rec.gyr_dps[0], [1000.0, 0.0, -1000.0])
    np.testing.assert_allclose(rec.gyr_dps[1], [0.0, 500.0, 0.0])
    np.testing.assert_allclose(rec.t_s, [0.0, 0.005, 0.010])
    assert rec.duration_s == pytest.approx(0.015)


def test_sisfall_gzip_reads_the_same(tmp_path: Path) -> None:
    plain = read_sisfall(write_sisfall(tmp_path / "a", "D01_SE02_R01", ROWS))
    packed = read_sisfall(write_sisfall(tmp_path / "b", "D01_SE02_R01", ROWS, gz=True))
    assert not packed.is_fall
    np.testing.assert_array_equal(plain.acc_g, packed.acc_g)
    np.testing.assert_array_equal(plain.gyr_dps, packed.gyr_dps)


def test_blank_and_truncated_last_lines_are_dropped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [*ROWS, "", "  5, 6, 7, 8", "", ""]
    with caplog.at_level(logging.WARNING, logger="lab.datasets"):
        rec = read_sisfall(write_sisfall(tmp_path, "D07_SA02_R01", lines))
    assert rec.acc_g.shape == (3, 3) and rec.dropped_lines == 1
    assert "D07_SA02_R01.txt" in caplog.text and "last line" in caplog.text


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([ROWS[0], "1, 2, x, 4, 5, 6, 7, 8, 9;", ROWS[2]], "line 2"),
        ([ROWS[0], "1, 2, 3, 4, 5, 6, 7, 8;", ROWS[2]], "line 2"),
        ([ROWS[0], "1, 2, 3, 4, 5, 6, 7, 8, 9", ROWS[2]], "line 2"),
        (["", "   ", ""], "no samples"),
    ],
)
def test_malformed_sisfall_files_name_file_and_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = write_sisfall(tmp_path, "F01_SA03_R02", lines)
    with pytest.raises(DatasetError, match=message) as info:
        read_sisfall(path)
    assert "F01_SA03_R02.txt" in str(info.value)
    assert isinstance(info.value, ValueError)  # callers that only know ValueError


def test_unreadable_and_misnamed_files(tmp_path: Path) -> None:
    broken = tmp_path / "D01_SA01_R01.txt.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError, match="cannot read"):
        read_sisfall(broken)
    with pytest.raises(DatasetError, match="SisFall name"):
        parse_sisfall_name("walking.txt")
    with pytest.raises(DatasetError, match="cannot read"):
        read_sisfall(tmp_path / "D01_SA01_R02.txt")


def test_listing_finds_nested_recordings_and_skips_others(tmp_path: Path) -> None:
    write_sisfall(tmp_path / "SA01", "D01_SA01_R01", ROWS)
    write_sisfall(tmp_path / "SE01", "D02_SE01_R01", ROWS, gz=True)
    (tmp_path / "Readme.txt").write_text("not data")
    (tmp_path / "SA01" / "notes.csv").write_text("x")
    assert [p.name for p in list_sisfall(tmp_path)] == ["D01_SA01_R01.txt", "D02_SE01_R01.txt.gz"]
    assert [r.subject for r in iter_sisfall(tmp_path)] == ["SA01", "SE01"]
    with pytest.raises(DatasetError, match="not found"):
        list_sisfall(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no SisFall recordings"):
        list_sisfall(tmp_path / "empty")


def write_broad(path: Path, n: int = 50, **override: Any) -> Path:
    rng = np.random.default_rng(1)
    data: dict[str, object] = {
        "imu_acc": np.tile([0.0, 0.0, 9.81], (n, 1)) + rng.normal(0, 0.01, (n, 3)),
        "imu_gyr": np.tile([0.0, np.pi, 0.0], (n, 1)),
        "imu_mag": np.zeros((n, 3)),
        "opt_quat": np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
        "movement": np.ones((n, 1), dtype=np.uint8),
        "sampling_rate": np.array([[285.71428571]]),
    }
    data.update(override)
    scipy.io.savemat(path, data)
    return path


def test_broad_trial_units_and_mask(tmp_path: Path) -> None:
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (50, 1))
    quat[3] = np.nan
    movement = np.ones((50, 1), dtype=np.uint8)
    movement[:10] = 0
    trial = read_broad(write_broad(tmp_path / "01_x.mat", opt_quat=quat, movement=movement))
    assert trial.name == "01_x" and trial.sample_rate_hz == pytest.approx(2000.0 / 7.0)
    np.testing.assert_allclose(trial.acc_g.mean(axis=0), [0.0, 0.0, 1.0], atol=0.01)
    np.testing.assert_allclose(trial.gyr_dps[0], [0.0, 180.0, 0.0])
    assert trial.movement.dtype == bool and trial.movement.sum() == 40
    assert np.isnan(trial.opt_quat_wxyz[3]).all()
    assert list_broad(tmp_path) == [tmp_path / "01_x.mat"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"imu_acc": np.zeros((49, 3))}, "same"),
        ({"opt_quat": np.zeros((50, 3))}, "opt_quat"),
        ({"sampling_rate": np.array([[0.0]])}, "sampling_rate"),
        ({"imu_gyr": np.full((50, 3), np.nan)}, "NaN"),
    ],
)
def test_bad_broad_trials(tmp_path: Path, override: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_broad(write_broad(tmp_path / "bad.mat", **override))


def test_broad_missing_variable_and_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "m.mat"
    scipy.io.savemat(path, {"imu_acc": np.zeros((5, 3))})
    with pytest.raises(DatasetError, match="imu_gyr"):
        read_broad(path)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"definitely not matlab")
    with pytest.raises(DatasetError, match="cannot read"):
        read_broad(junk)
    with pytest.raises(DatasetError, match="not found"):
        list_broad(tmp_path / "nope")


# -- real datasets (skipped when absent) -------------------------------------------


@pytest.mark.dataset
@pytest.mark.skipif(not SISFALL.is_dir(), reason="SisFall dataset not available")
def test_real_sisfall_files_read_and_standing_is_minus_y() -> None:
    paths = list_sisfall(SISFALL)
    assert len(paths) >= 100
    rec = read_sisfall(next(p for p in paths if p.name.startswith("D07_")))  # sit in a chair
    assert rec.dropped_lines == 0 and rec.acc_g.shape[1] == 3
    assert rec.duration_s == pytest.approx(12.0, abs=2.5)
    first_s = rec.acc_g[:200]  # standing at the start
    up = first_s.mean(axis=0) / np.linalg.norm(first_s.mean(axis=0))
    assert float(up @ np.array(SISFALL_NOMINAL_UP_SENSOR)) > 0.9
    assert np.linalg.norm(first_s.mean(axis=0)) == pytest.approx(1.0, abs=0.1)


@pytest.mark.dataset
@pytest.mark.skipif(not BROAD.is_dir(), reason="BROAD dataset not available")
def test_real_broad_trial_reads_with_gravity_about_one_g() -> None:
    trial = read_broad(list_broad(BROAD)[0])
    assert trial.sample_rate_hz == pytest.approx(285.714, abs=0.01)
    rest = trial.acc_g[~trial.movement][:500]
    assert np.linalg.norm(rest.mean(axis=0)) == pytest.approx(1.0, abs=0.03)
    assert 0.5 < trial.movement.mean() < 1.0
