"""Per-tile stage-1 sums over a window's pixels.

OpenCV's histogram and norm kernels on views of the window (no per-tile copies, the GIL released),
numpy where OpenCV has no exact kernel.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

cv2.setNumThreads(1)  # tiles are small: the run's parallelism is its windows, not OpenCV's threads

#: dtypes whose sums OpenCV takes exactly: non-negative integers, so the L1 norm is the sum
_CV_SUMMED = (np.dtype(np.uint8), np.dtype(np.uint16))
#: calcHist counts in float32, exact up to 2**24 pixels a tile
_CV_HIST_MAX_PIXELS = 1 << 24


def validity(data: np.ndarray, valid: np.ndarray, nodata: float, use_nodata: bool) -> np.ndarray | None:
    """The (H, W) validity of a window's pixels, ``None`` when all are valid.

    ``valid`` when given (shape other than (0, 0)), else a pixel is valid if every band is finite and,
    with ``use_nodata``, some band differs from ``nodata``.
    """
    if valid.shape[0] > 0:
        return valid
    mask = None
    if use_nodata:
        mask = data[0] != nodata
        for band in data[1:]:
            mask |= band != nodata
    if data.dtype.kind == "f":
        finite = np.isfinite(data).all(axis=0)
        mask = finite if mask is None else mask & finite
    return mask


def _valid8(data: np.ndarray, valid: np.ndarray, nodata: float,
            use_nodata: bool) -> tuple[np.ndarray | None, bool]:
    """:func:`validity` as a uint8 mask (non-zero: valid) for OpenCV.

    ``None`` when every pixel is valid, and whether its invalid pixels are exactly those whose every
    band is ``nodata`` (integer nodata in uint8/uint16 data, compared by OpenCV without numpy
    temporaries).
    """
    info = np.iinfo(data.dtype) if data.dtype in _CV_SUMMED else None
    if valid.shape[0] == 0 and use_nodata and info is not None and float(nodata).is_integer() \
            and info.min <= nodata <= info.max:
        value: Any = float(nodata)  # a scalar, which OpenCV takes (its stubs list arrays only)
        mask = cv2.compare(data[0], value, cv2.CMP_NE)
        for band in data[1:]:
            cv2.bitwise_or(mask, cv2.compare(band, value, cv2.CMP_NE), dst=mask)
        by_value = True
    else:
        found = validity(data, valid, nodata, use_nodata)
        if found is None:
            return None, False
        mask, by_value = found.view(np.uint8), False
    return (None if cv2.countNonZero(mask) == mask.size else mask), by_value


def tile_sums(data: np.ndarray, grey: np.ndarray, valid: np.ndarray, nodata: float, use_nodata: bool,
              rows: np.ndarray, cols: np.ndarray, heights: np.ndarray, widths: np.ndarray,
              nodata_is_grey: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Histograms and band sums of the tiles inside one window, over their valid pixels.

    data: (bands, H, W) any numeric dtype; grey: (H, W) uint8 grey levels; valid, nodata,
    use_nodata: see :func:`validity`. Tiles are given by their window-relative offsets and
    sizes. ``nodata_is_grey``: ``grey`` is the uint8 luma or the band itself, so a pixel whose
    every band is an integer nodata v has grey level v (the luma weights add up to 256): tiles
    with nodata then run unmasked and their nodata pixels are taken out of the figures
    afterwards, exactly. Returns (hist (n, 256) int64, count (n,)
    int64, sums (n, bands) float64, squares (n, bands) float64); integer data give exact sums.
    """
    n, bands = rows.shape[0], data.shape[0]
    hist = np.zeros((n, 256), np.int64)
    sums = np.zeros((n, bands), np.float64)
    squares = np.zeros((n, bands), np.float64)
    mask8, by_value = _valid8(data, valid, nodata, use_nodata)
    by_cv = data.dtype in _CV_SUMMED
    subtract = by_value and nodata_is_grey and data.dtype == np.uint8
    nodata_grey = int(nodata) if subtract else 0  # an integer within uint8's range (_valid8)
    for t, (r, c, h, w) in enumerate(zip(rows.tolist(), cols.tolist(), heights.tolist(), widths.tolist())):
        g = grey[r : r + h, c : c + w]
        m = None if mask8 is None else mask8[r : r + h, c : c + w]
        invalid = 0 if m is None else h * w - cv2.countNonZero(m)
        m_sums = m if invalid and not subtract else None  # else nodata is taken out of the sums below
        # a histogram skips masked pixels, faster than counting a large flat nodata area in one bin
        m_hist = m if invalid and (not subtract or 4 * invalid > h * w) else None
        if h * w < _CV_HIST_MAX_PIXELS:
            hist[t] = cv2.calcHist([g], [0], m_hist, [256], [0, 256]).ravel()
        else:
            hist[t] = np.bincount((g if m_hist is None else g[m_hist != 0]).ravel(), minlength=256)
        if by_cv:
            for b in range(bands):
                band = data[b, r : r + h, c : c + w]
                sums[t, b] = cv2.norm(band, cv2.NORM_L1, mask=m_sums)
                squares[t, b] = cv2.norm(band, cv2.NORM_L2SQR, mask=m_sums)
        else:
            values = data[:, r : r + h, c : c + w]
            values = values.reshape(bands, -1) if m_sums is None else values[:, m_sums != 0]
            values = values.astype(np.float64)
            sums[t] = values.sum(axis=1)
            squares[t] = np.einsum("ij,ij->i", values, values)
        if invalid and subtract:
            if m_hist is None:
                hist[t, nodata_grey] -= invalid
            sums[t] -= invalid * nodata
            squares[t] -= invalid * nodata * nodata
    if by_cv:  # OpenCV returns integer sums as doubles with rounding noise
        np.rint(sums, out=sums)
        np.rint(squares, out=squares)
    return hist, hist.sum(axis=1), sums, squares
