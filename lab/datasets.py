"""Readers for the public datasets the engine is evaluated on.

* **SisFall** (Sucerquia, López, Vargas-Bonilla, Sensors 17(1), 2017): one
  activity per text file ``CODE_SUBJECT_Rnn.txt`` (or ``.txt.gz``), 200 Hz,
  nine comma-separated integers per line ending in ``;``. Columns 1-3 are the
  ADXL345 accelerometer (±16 g, 13 bit: ``g = value * 32 / 8192``), columns
  4-6 the ITG3200 gyroscope (±2000 °/s, 16 bit: ``dps = value * 4000 /
  65536``), columns 7-9 a second accelerometer we do not use. The sensor is
  at the waist; standing upright reads about -1 g on Y.
* **BROAD** (Laidig, Caruso, Cereatti, Seel, Data 6(7), 2021): MATLAB v5
  ``.mat`` trials with ``imu_acc`` (m/s²), ``imu_gyr`` (rad/s), ``opt_quat``
  (w, x, y, z, sensor -> ENU; NaN where the optical system lost the body),
  ``movement`` and ``sampling_rate`` (≈285.7 Hz).

Readers return frozen dataclasses in the project's units (g, °/s, s). A file
that cannot be read raises :class:`DatasetError` naming the file (and the
line, for text files); a blank or truncated *last* line of a SisFall file (a
recording cut short) is dropped, counted and logged instead.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from numpy.typing import NDArray

from common.errors import PostureMonitorError

__all__ = [
    "BROAD_GRAVITY_MPS2",
    "SISFALL_ACC_G_PER_LSB",
    "SISFALL_GYR_DPS_PER_LSB",
    "SISFALL_NOMINAL_UP_SENSOR",
    "SISFALL_SAMPLE_RATE_HZ",
    "BroadTrial",
    "DatasetError",
    "SisFallRecording",
    "iter_sisfall",
    "list_broad",
    "list_sisfall",
    "parse_sisfall_name",
    "read_broad",
    "read_sisfall",
]

_log = logging.getLogger(__name__)

SISFALL_SAMPLE_RATE_HZ = 200.0
SISFALL_ACC_G_PER_LSB = 32.0 / 8192.0
"""ADXL345, ±16 g in 13 bits: (2 * 16 g) / 2**13."""
SISFALL_GYR_DPS_PER_LSB = 4000.0 / 65536.0
"""ITG3200, ±2000 °/s in 16 bits: (2 * 2000 °/s) / 2**16."""
SISFALL_NOMINAL_UP_SENSOR = (0.0, -1.0, 0.0)
"""What SisFall's waist sensor reads, normalised, when the subject stands."""
BROAD_GRAVITY_MPS2 = 9.81
"""Conversion of BROAD's m/s² to g (the value BROAD's own example code uses)."""

_SISFALL_COLUMNS = 9
_SISFALL_NAME = re.compile(r"^(?P<code>[DF]\d{2})_(?P<subject>S[AE]\d{2})_R(?P<trial>\d{2})$")


class DatasetError(PostureMonitorError, ValueError):
    """A dataset file is missing, unreadable or malformed; the message names it."""


@dataclass(frozen=True)
class SisFallRecording:
    """One SisFall activity file.

    Attributes:
        name: file stem without extensions, e.g. ``"F05_SA01_R04"``.
        code: activity code, ``"D01"``-``"D19"`` (ADL) or ``"F01"``-``"F15"`` (fall).
        subject: ``"SA01"``..., ``"SE01"``...
        trial: trial number (1-based).
        sample_rate_hz: 200.0.
        acc_g: (n, 3) float64 ADXL345 acceleration in g, sensor axes.
        gyr_dps: (n, 3) float64 ITG3200 angular rate in °/s, sensor axes.
        dropped_lines: malformed trailing lines that were skipped.
    """

    name: str
    code: str
    subject: str
    trial: int
    sample_rate_hz: float
    acc_g: NDArray[np.float64]
    gyr_dps: NDArray[np.float64]
    dropped_lines: int = 0

    @property
    def is_fall(self) -> bool:
        """True for fall recordings (codes starting with ``F``)."""
        return self.code.startswith("F")

    @property
    def t_s(self) -> NDArray[np.float64]:
        """(n,) sample times in seconds from the first sample."""
        return np.arange(self.acc_g.shape[0], dtype=np.float64) / self.sample_rate_hz

    @property
    def duration_s(self) -> float:
        """Recording length in seconds."""
        return self.acc_g.shape[0] / self.sample_rate_hz


@dataclass(frozen=True)
class BroadTrial:
    """One BROAD trial in the project's units.

    Attributes:
        name: file stem, e.g. ``"01_undisturbed_slow_rotation_A"``.
        sample_rate_hz: IMU sampling rate (≈285.7 Hz).
        acc_g: (n, 3) accelerometer in g (m/s² / 9.81).
        gyr_dps: (n, 3) gyroscope in °/s.
        opt_quat_wxyz: (n, 4) optical orientation, sensor -> ENU, NaN where lost.
        movement: (n,) bool, samples where errors are counted.
    """

    name: str
    sample_rate_hz: float
    acc_g: NDArray[np.float64]
    gyr_dps: NDArray[np.float64]
    opt_quat_wxyz: NDArray[np.float64]
    movement: NDArray[np.bool_]

    @property
    def t_s(self) -> NDArray[np.float64]:
        """(n,) sample times in seconds from the first sample."""
        return np.arange(self.acc_g.shape[0], dtype=np.float64) / self.sample_rate_hz


def parse_sisfall_name(path: str | Path) -> tuple[str, str, int]:
    """Split ``CODE_SUBJECT_Rnn[.txt[.gz]]`` into ``(code, subject, trial)``.

    Raises:
        DatasetError: the name does not follow SisFall's convention.
    """
    name = Path(path).name
    for suffix in (".gz", ".txt"):
        name = name.removesuffix(suffix)
    match = _SISFALL_NAME.match(name)
    if match is None:
        raise DatasetError(
            f"{path}: expected a SisFall name like F05_SA01_R04.txt, got {Path(path).name!r}"
        )
    return match["code"], match["subject"], int(match["trial"])


def list_sisfall(root: str | Path) -> list[Path]:
    """All SisFall recordings under ``root`` (``SUBJECT/CODE_SUBJECT_Rnn.txt[.gz]``), sorted.

    Files whose names do not follow the convention (e.g. ``Readme.txt``) are skipped.

    Raises:
        DatasetError: ``root`` is not a directory or holds no recording.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DatasetError(f"{root_path}: SisFall folder not found")
    found: list[Path] = []
    for path in sorted(root_path.rglob("*.txt*")):
        if not (path.name.endswith(".txt") or path.name.endswith(".txt.gz")):
            continue
        try:
            parse_sisfall_name(path)
        except DatasetError:
            continue
        found.append(path)
    if not found:
        raise DatasetError(f"{root_path}: no SisFall recordings (CODE_SUBJECT_Rnn.txt[.gz]) found")
    return found


def _read_text(path: Path) -> str:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
        return raw.decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read SisFall file: {exc}") from exc


def _is_complete_row(line: str) -> bool:
    """True if ``line`` is nine integers and the closing ``;``."""
    if not line.endswith(";"):
        return False
    fields = line[:-1].split(",")
    if len(fields) != _SISFALL_COLUMNS:
        return False
    try:
        for field in fields:
            int(field)
    except ValueError:
        return False
    return True


def _parse_sisfall_rows(text: str, path: Path) -> tuple[NDArray[np.int32], int]:
    """Parse SisFall text into (n, 9) int32 raw counts and the dropped-line count."""
    numbered = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    rows = [(i, ln) for i, ln in numbered if ln]
    dropped = 0
    # A recording cut short leaves a partial last line; that one line is not
    # evidence of a bad file, but anything malformed before it is.
    if rows and not _is_complete_row(rows[-1][1]):
        _log.warning("%s: dropped malformed last line %d: %r", path.name, rows[-1][0], rows[-1][1])
        rows.pop()
        dropped = 1
    if not rows:
        raise DatasetError(f"{path}: no samples (expected lines of 9 integers ending in ';')")
    try:
        data = np.loadtxt(
            [ln.removesuffix(";") for _, ln in rows], delimiter=",", dtype=np.int32, ndmin=2
        )
    except ValueError as exc:
        bad = next((i, ln) for i, ln in rows if not _is_complete_row(ln))
        raise DatasetError(
            f"{path}: line {bad[0]}: expected 9 comma-separated integers ending in ';', "
            f"got {bad[1][:80]!r}"
        ) from exc
    if data.shape[1] != _SISFALL_COLUMNS:
        raise DatasetError(f"{path}: expected {_SISFALL_COLUMNS} columns, got {data.shape[1]}")
    # loadtxt tolerates a missing ';' in the middle; the format does not.
    missing = next((i for i, ln in rows if not ln.endswith(";")), None)
    if missing is not None:
        raise DatasetError(f"{path}: line {missing}: missing the closing ';'")
    return data, dropped


def read_sisfall(path: str | Path) -> SisFallRecording:
    """Read one SisFall recording (``.txt`` or ``.txt.gz``).

    Returns:
        The recording with acceleration in g and angular rate in °/s at 200 Hz.

    Raises:
        DatasetError: unreadable file, a bad name, or a malformed line other
            than a truncated last one.
    """
    file_path = Path(path)
    code, subject, trial = parse_sisfall_name(file_path)
    counts, dropped = _parse_sisfall_rows(_read_text(file_path), file_path)
    return SisFallRecording(
        name=f"{code}_{subject}_R{trial:02d}",
        code=code,
        subject=subject,
        trial=trial,
        sample_rate_hz=SISFALL_SAMPLE_RATE_HZ,
        acc_g=counts[:, 0:3].astype(np.float64) * SISFALL_ACC_G_PER_LSB,
        gyr_dps=counts[:, 3:6].astype(np.float64) * SISFALL_GYR_DPS_PER_LSB,
        dropped_lines=dropped,
    )


def iter_sisfall(root: str | Path) -> Iterator[SisFallRecording]:
    """Read every recording under ``root`` in sorted order (see :func:`list_sisfall`)."""
    for path in list_sisfall(root):
        yield read_sisfall(path)


def list_broad(root: str | Path) -> list[Path]:
    """All BROAD ``.mat`` trials directly in ``root``, sorted by name.

    Raises:
        DatasetError: ``root`` is not a directory or holds no ``.mat`` file.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DatasetError(f"{root_path}: BROAD folder not found")
    found = sorted(root_path.glob("*.mat"))
    if not found:
        raise DatasetError(f"{root_path}: no BROAD trials (*.mat) found")
    return found


def _mat_array(mat: dict[str, object], key: str, cols: int, path: Path) -> NDArray[np.float64]:
    value = mat.get(key)
    if not isinstance(value, np.ndarray):
        raise DatasetError(f"{path}: variable {key!r} missing")
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 and cols == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != cols:
        raise DatasetError(f"{path}: variable {key!r}: expected shape (n, {cols}), got {arr.shape}")
    return arr


def read_broad(path: str | Path) -> BroadTrial:
    """Read one BROAD trial (MATLAB v5 ``.mat``).

    Raises:
        DatasetError: unreadable file, missing variables, or inconsistent lengths.
    """
    file_path = Path(path)
    try:
        mat = scipy.io.loadmat(file_path)
    except (OSError, ValueError, TypeError, IndexError, KeyError, NotImplementedError) as exc:
        # scipy's MAT reader raises several kinds on a damaged file.
        raise DatasetError(f"{file_path}: cannot read BROAD trial: {exc!r}") from exc
    acc = _mat_array(mat, "imu_acc", 3, file_path)
    gyr = _mat_array(mat, "imu_gyr", 3, file_path)
    quat = _mat_array(mat, "opt_quat", 4, file_path)
    movement = _mat_array(mat, "movement", 1, file_path)[:, 0]
    rate = _mat_array(mat, "sampling_rate", 1, file_path).ravel()
    n = acc.shape[0]
    if not (gyr.shape[0] == quat.shape[0] == movement.shape[0] == n) or n == 0:
        raise DatasetError(
            f"{file_path}: imu_acc, imu_gyr, opt_quat and movement must have the same "
            f"non-zero length, got {n}, {gyr.shape[0]}, {quat.shape[0]}, {movement.shape[0]}"
        )
    if rate.size != 1 or not np.isfinite(rate[0]) or rate[0] <= 0:
        raise DatasetError(f"{file_path}: sampling_rate must be one positive number, got {rate}")
    if not (np.isfinite(acc).all() and np.isfinite(gyr).all()):
        raise DatasetError(f"{file_path}: imu_acc/imu_gyr contain NaN or inf")
    return BroadTrial(
        name=file_path.stem,
        sample_rate_hz=float(rate[0]),
        acc_g=acc / BROAD_GRAVITY_MPS2,
        gyr_dps=np.degrees(gyr),
        opt_quat_wxyz=quat,
        movement=movement > 0.5,
    )
