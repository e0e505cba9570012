"""Compiled per-tile kernels (numba): one pass over a block's pixels for all stage-1 sums."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def tile_sums(data, grey, valid, nodata, use_nodata, fuse_luma, rows, cols, heights, widths):
    """Histograms and band sums of tiles inside one block, in one pass over their pixels.

    data: (bands, H, W) any numeric dtype; grey: (H, W) uint8 grey levels, unused when
    ``fuse_luma`` (uint8 RGB: BT.601 integer luma computed here); valid: (H, W) bool, or
    (0, 0) to derive validity from ``nodata`` (when ``use_nodata``: a pixel is valid if any
    band differs from it) and from NaN/±Inf (float data). Tiles are given by their block-relative
    offsets and sizes. Returns (hist (n, 256) int64, count (n,) int64, sums (n, bands),
    squares (n, bands)) over valid pixels.
    """
    n = rows.shape[0]
    bands = data.shape[0]
    hist = np.zeros((n, 256), np.int64)
    count = np.zeros(n, np.int64)
    sums = np.zeros((n, bands), np.float64)
    squares = np.zeros((n, bands), np.float64)
    has_mask = valid.shape[0] > 0
    for t in range(n):
        r0 = rows[t]
        c0 = cols[t]
        for i in range(r0, r0 + heights[t]):
            for j in range(c0, c0 + widths[t]):
                if has_mask:
                    if not valid[i, j]:
                        continue
                else:
                    ok = not use_nodata
                    for b in range(bands):
                        v = data[b, i, j]
                        if (v - v) != 0:  # NaN or ±Inf (always 0 for integers)
                            ok = False
                            break
                        if use_nodata and v != nodata:
                            ok = True
                    if not ok:
                        continue
                if fuse_luma:
                    g = (77 * np.int64(data[0, i, j]) + 150 * np.int64(data[1, i, j])
                         + 29 * np.int64(data[2, i, j]) + 128) >> 8
                else:
                    g = grey[i, j]
                hist[t, g] += 1
                count[t] += 1
                for b in range(bands):
                    v = np.float64(data[b, i, j])
                    sums[t, b] += v
                    squares[t, b] += v * v
    return hist, count, sums, squares


@numba.njit(nogil=True, cache=True)
def tile_sums_rgb8(data, valid, nodata, use_nodata, rows, cols, heights, widths):
    """:func:`tile_sums` specialised for 3-band uint8 (the common case): integer accumulators,
    fused BT.601 luma, no per-band inner loop. Same outputs."""
    n = rows.shape[0]
    hist = np.zeros((n, 256), np.int64)
    count = np.zeros(n, np.int64)
    sums = np.zeros((n, 3), np.float64)
    squares = np.zeros((n, 3), np.float64)
    has_mask = valid.shape[0] > 0
    nd = np.int64(nodata) if use_nodata else np.int64(-1)
    h = np.zeros(256, np.int64)
    for t in range(n):
        h[:] = 0
        cnt = np.int64(0)
        s0 = np.int64(0)
        s1 = np.int64(0)
        s2 = np.int64(0)
        q0 = np.int64(0)
        q1 = np.int64(0)
        q2 = np.int64(0)
        r0 = rows[t]
        c0 = cols[t]
        for i in range(r0, r0 + heights[t]):
            for j in range(c0, c0 + widths[t]):
                a = np.int64(data[0, i, j])
                b = np.int64(data[1, i, j])
                c = np.int64(data[2, i, j])
                if has_mask:
                    if not valid[i, j]:
                        continue
                elif a == nd and b == nd and c == nd:
                    continue
                h[(77 * a + 150 * b + 29 * c + 128) >> 8] += 1
                cnt += 1
                s0 += a
                s1 += b
                s2 += c
                q0 += a * a
                q1 += b * b
                q2 += c * c
        hist[t, :] = h
        count[t] = cnt
        sums[t, 0] = s0
        sums[t, 1] = s1
        sums[t, 2] = s2
        squares[t, 0] = q0
        squares[t, 1] = q1
        squares[t, 2] = q2
    return hist, count, sums, squares
