"""Streaming second-order-section filters with carried state, fast on short blocks.

:class:`SosFilter` is ``scipy.signal.sosfilt`` with ``zi`` carried from one
call to the next over ``channels`` parallel signals, the columns of a block
``x`` of shape ``(n, channels)``. The engine lays many wearables side by
side as columns (``channels = signals x devices``), so one call filters a
block of every device.

A wearable sends about ten samples at a time, where ``sosfilt``'s call
overhead (tens of µs) dominates; for blocks up to ``max_block`` samples the
filter instead applies the exact block form of the same linear system, one
matrix product::

    [y; z_next] = [[O_n, T_n], [A_n, K_n]] @ [z; x]

with ``O_n`` the response to the state, ``T_n`` the impulse responses,
``A_n`` the state transition over ``n`` samples and ``K_n`` the input to
state map. The matrices are obtained by running ``sosfilt`` itself on unit
states and unit impulses (so the two paths are the same filter by
construction) and cached per filter and block length in one cache shared by
all instances (every engine uses the same few filters, so a wearable costs
only its state). Results agree with ``sosfilt`` to rounding (~1e-15
relative). Each output column depends on its own column only, so filtering
one device alone or among a thousand gives the same numbers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import signal

__all__ = ["SosFilter"]

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.intp]

# (sos bytes, block length) -> block matrix; bounded: at most a few hundred
# KiB for the engine's filters and block lengths up to max_block.
_BLOCK_CACHE: dict[tuple[bytes, int], FloatArray] = {}
_BLOCK_CACHE_MAX = 512

# OpenBLAS hands a product to several threads above about 2.6e5
# multiply-adds; for these thin products on a shared machine the threads
# cost more than they give (measured 430 µs threaded against 88 µs on one
# thread for 6000 columns), so wide blocks go in column chunks below that.
_MAX_COLUMNS = 1024


class SosFilter:
    """A cascade of biquads over ``channels`` parallel signals.

    Args:
        sos: (sections, 6) second-order sections (``scipy.signal`` layout).
        channels: number of signals filtered side by side (columns of ``x``).
        max_block: longest block handled by the matrix form.
    """

    def __init__(self, sos: FloatArray, channels: int, max_block: int = 40) -> None:
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        self.channels = channels
        self.max_block = max_block
        self._sections = self.sos.shape[0]
        self._zi_unit = signal.sosfilt_zi(self.sos).reshape(-1)  # (order,)
        self._order = 2 * self._sections
        self.order = self._order
        """Length of the state per signal (two per section)."""
        self._key = self.sos.tobytes()
        self._blocks: dict[int, FloatArray] = {}  # this instance's view of the cache
        self.state = np.zeros((self._order, channels))

    def reset(self, x0: FloatArray | None = None, columns: IndexArray | None = None) -> None:
        """Zero state, or the steady state for a constant input ``x0``.

        ``columns`` (indices) restricts the reset to those columns; ``x0`` then
        has one value per listed column, else one per channel.
        """
        cols = slice(None) if columns is None else columns
        if x0 is None:
            self.state[:, cols] = 0.0
        else:
            self.state[:, cols] = self.steady_state(np.asarray(x0, dtype=np.float64))

    def steady_state(self, x0: FloatArray) -> FloatArray:
        """The state ``(order, k)`` a constant input ``x0`` (k,) settles to."""
        return self._zi_unit[:, None] * x0[None, :]

    def __call__(self, x: FloatArray) -> FloatArray:
        """Filter a block ``x`` (n, channels) with the carried state; returns (n, channels)."""
        y, self.state = self.run(x, self.state)
        return y

    def run(self, x: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Filter ``x`` (n, k) from ``state`` (order, k); returns ``(y, final state)``.

        Pure: neither ``state`` nor the filter's own state is modified.
        """
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, x.shape[1])), state.copy()
        if n > self.max_block:
            zi = state.reshape(self._sections, 2, -1)
            y, zf = signal.sosfilt(self.sos, x, axis=0, zi=zi)
            return np.asarray(y), zf.reshape(self._order, -1)
        m = self._blocks.get(n)
        if m is None:
            m = _BLOCK_CACHE.get((self._key, n))
            if m is None:
                m = self._block_matrix(n)
                if len(_BLOCK_CACHE) < _BLOCK_CACHE_MAX:
                    _BLOCK_CACHE[(self._key, n)] = m
            self._blocks[n] = m
        stacked = np.concatenate((state, x))
        k = stacked.shape[1]
        if k <= _MAX_COLUMNS:
            out = m @ stacked
        else:
            out = np.empty((n + self._order, k))
            for a in range(0, k, _MAX_COLUMNS):
                np.matmul(m, stacked[:, a : a + _MAX_COLUMNS], out=out[:, a : a + _MAX_COLUMNS])
        return out[:n], out[n:]

    def _block_matrix(self, n: int) -> FloatArray:
        s, order = self._sections, self._order
        unit_states = np.eye(order).reshape(s, 2, order)
        free, a_n = signal.sosfilt(self.sos, np.zeros((n, order)), axis=0, zi=unit_states)
        impulses = np.eye(n)
        forced, k_n = signal.sosfilt(self.sos, impulses, axis=0, zi=np.zeros((s, 2, n)))
        m = np.empty((n + order, order + n))
        m[:n, :order] = free
        m[:n, order:] = forced
        m[n:, :order] = a_n.reshape(order, order)
        m[n:, order:] = k_n.reshape(order, n)
        m.flags.writeable = False  # shared between instances
        return m
