"""A tick's packets as engine input: runs of packets per wearable, arrays per call.

Per packet the gateway decodes only the header in Python (CRC, validation,
the timeline); the samples of every packet that goes into one engine call are
converted in one NumPy operation, and their times in another. The values are
bit for bit those of decoding each packet on its own
(``device_gateway.protocol.decode_imu_packet`` and ``Timeline.accept``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from device_gateway.protocol import ACC_LSB_PER_G, GYR_LSB_PER_DPS, AccRange, ImuHeader

__all__ = ["Chunk", "ChunkKey", "chunk_arrays"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ChunkKey:
    """Chunks with equal keys go into one engine call (equal n per device)."""

    interval_us: int
    has_gyro: bool
    acc_range: AccRange
    samples: int


@dataclass(slots=True)
class Chunk:
    """Consecutive packets of one wearable with one layout, in arrival order.

    ``starts_s`` are the engine times of each packet's first sample
    (``Timeline.place``); ``bodies`` the packets' raw int16 samples.
    """

    interval_us: int
    has_gyro: bool
    acc_range: AccRange
    starts_s: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    samples: int = 0

    @staticmethod
    def of(header: ImuHeader) -> Chunk:
        return Chunk(header.interval_us, header.has_gyro, header.acc_range)

    def fits(self, header: ImuHeader, max_packets: int) -> bool:
        """Whether ``header``'s packet continues this chunk (same layout, room left)."""
        return (
            header.interval_us == self.interval_us
            and header.has_gyro == self.has_gyro
            and header.acc_range == self.acc_range
            and len(self.bodies) < max_packets
        )

    def add(self, header: ImuHeader, start_s: float) -> None:
        self.starts_s.append(start_s)
        self.counts.append(header.sample_count)
        self.bodies.append(header.body)
        self.samples += header.sample_count

    @property
    def key(self) -> ChunkKey:
        return ChunkKey(self.interval_us, self.has_gyro, self.acc_range, self.samples)


def chunk_arrays(
    chunks: list[Chunk],
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """``t_s`` (n, D), ``acc_g`` (n, 3, D), ``gyr_dps`` (n, 3, D) or None of
    ``D`` chunks sharing one :class:`ChunkKey`: device last, the layout the
    engine keeps (:meth:`posture.batch.BatchEngine.process_device_last`), so
    the samples are converted straight into it and never copied again."""
    first = chunks[0]
    d, n = len(chunks), first.samples
    # One Python loop over the chunks (a tick has one per wearable) gathers
    # the bodies, start times and packet lengths.
    body_list: list[bytes] = []
    start_list: list[float] = []
    count_list: list[int] = []
    for c in chunks:
        body_list += c.bodies
        start_list += c.starts_s
        count_list += c.counts
    bodies = b"".join(body_list)
    per_sample = 6 if first.has_gyro else 3
    # (n, per_sample, D) view of the int16 counts; the division converts
    # each to float64 first, as imu_samples does, so the values are its own.
    counts = np.frombuffer(bodies, dtype="<i2", count=d * n * per_sample)
    counts = counts.reshape(d, n, per_sample).transpose(1, 2, 0)
    acc = np.empty((n, 3, d))
    np.divide(counts[:, :3], ACC_LSB_PER_G[first.acc_range], out=acc, dtype=np.float64)
    gyr = None
    if first.has_gyro:
        gyr = np.empty((n, 3, d))
        np.divide(counts[:, 3:], GYR_LSB_PER_DPS, out=gyr, dtype=np.float64)
    interval_s = first.interval_us * 1e-6
    starts = np.array(start_list, dtype=np.float64)
    per_packet = first.counts[0]
    if starts.size * per_packet == d * n and count_list.count(per_packet) == len(count_list):
        # The usual tick: packets of one length (start + interval * i, as
        # Timeline.accept computes it); packet p of every device is a row.
        within = interval_s * np.arange(per_packet, dtype=np.float64)
        t = starts.reshape(d, n // per_packet).T[:, None, :] + within[None, :, None]
        t = t.reshape(n, d)
    else:
        counts_per = np.array(count_list, dtype=np.intp)
        first_row = np.cumsum(counts_per) - counts_per
        rows = np.arange(d * n, dtype=np.intp) - np.repeat(first_row, counts_per)
        flat = np.repeat(starts, counts_per) + interval_s * rows.astype(np.float64)
        t = np.ascontiguousarray(flat.reshape(d, n).T)
    return t, acc, gyr
