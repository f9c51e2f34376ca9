"""Samples measured ahead, a block per wearable, many wearables per call.

A wearable asks for a :class:`BlockRequest` when the packet it is about to
send has no samples yet; :func:`measure_blocks` measures every request of a
world's tick with one :meth:`WardSensors.measure` call per block length and
hands each wearable its :class:`SampleBlock`, whose body bytes packets are
sliced from. Blocks end at whole ``ALIGN_S`` seconds of scenario time, so
after the first one the wearables of a world ask together, once per
``ALIGN_S``, and a call holds the whole ward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simulator.ward import WardSensors

__all__ = ["ALIGN_S", "BlockRequest", "SampleBlock", "measure_blocks"]

ALIGN_S = 1.0
"""Blocks of samples end at multiples of this scenario time (seconds)."""


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Samples ``start .. start + count`` of one stream, as packet body bytes."""

    tag: tuple[int, int, int]
    start: int
    count: int
    body: bytes
    """Little-endian int16 per sample: acc x, y, z[, gyr x, y, z]."""
    bytes_per_sample: int

    def covers(self, first: int, count: int) -> bool:
        return self.start <= first and first + count <= self.start + self.count

    def body_of(self, first: int, count: int) -> bytes:
        lo = (first - self.start) * self.bytes_per_sample
        return self.body[lo : lo + count * self.bytes_per_sample]


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """What one wearable needs measured: samples ``index`` (n,) of stream ``tag``."""

    row: int
    """The wearable's row in the ward."""
    tag: tuple[int, int, int]
    index: NDArray[np.int64]
    t_s: NDArray[np.float64]
    since_boot_s: NDArray[np.float64]
    window_s: float
    noise_key: int
    has_gyro: bool
    deliver: Callable[[SampleBlock], None]
    """Where the measured block goes (the wearable's cache)."""


def measure_blocks(ward: WardSensors, requests: Sequence[BlockRequest]) -> None:
    """Measure every request (distinct rows) and deliver each its block."""
    by_length: dict[int, list[BlockRequest]] = {}
    for request in requests:
        by_length.setdefault(request.index.shape[0], []).append(request)
    for group in by_length.values():
        acc, gyr = ward.measure(
            np.asarray([r.row for r in group], dtype=np.intp),
            np.stack([r.t_s for r in group]),
            window_s=np.asarray([r.window_s for r in group]),
            since_boot_s=np.stack([r.since_boot_s for r in group]),
            sample_index=np.stack([r.index for r in group]),
            noise_key=np.asarray([r.noise_key for r in group], dtype=np.uint64),
        )
        # One conversion for the whole group: the rows' packet bodies side by side.
        full = np.concatenate([acc, gyr], axis=2).astype("<i2", copy=False)
        for i, request in enumerate(group):
            start, count = int(request.index[0]), request.index.shape[0]
            if request.has_gyro:
                body, per_sample = full[i].tobytes(), 12
            else:
                body, per_sample = acc[i].astype("<i2", copy=False).tobytes(), 6
            request.deliver(SampleBlock(request.tag, start, count, body, per_sample))
