"""Attribution maps drawn as PNG heatmaps (written here: zlib and struct, no imaging library).

Positive attributions are red, negative blue, each as strong as ``|a| / max |a|``, over white
or over a grayscale picture of the input.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["MAX_SIDE", "heatmap_png", "to_2d"]

MAX_SIDE = 1024  # pixels, the longest side of a heatmap
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RED = np.array([255.0, 0.0, 0.0])
_BLUE = np.array([0.0, 0.0, 255.0])


def to_2d(attr: np.ndarray, spatial_axes: tuple[int, int]) -> np.ndarray:
    """``attr`` summed over every axis but ``spatial_axes`` (rows, columns), float64 2-D."""
    values = np.asarray(attr, dtype=np.float64)
    rows, columns = (axis + values.ndim if axis < 0 else axis for axis in spatial_axes)
    if rows == columns or not (0 <= rows < values.ndim and 0 <= columns < values.ndim):
        raise ValueError(f"{spatial_axes} are not two axes of an array of rank {values.ndim}")
    moved = np.moveaxis(values, (rows, columns), (0, 1))
    summed: np.ndarray = moved.reshape(moved.shape[0], moved.shape[1], -1).sum(axis=2)
    return summed


def heatmap_png(attributions: np.ndarray, image: np.ndarray | None = None, scale: int = 8) -> bytes:
    """A PNG (8-bit RGB) of a 2-D attribution map, each value a ``scale`` x ``scale`` block.

    ``image`` (the same 2-D shape, any range) is drawn in gray underneath. The scale is lowered
    so that no side passes ``MAX_SIDE`` pixels (a larger map is sampled down).
    """
    values = np.asarray(attributions, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"the attributions must be a non-empty 2-D map, not {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("the attributions hold NaN or infinite values")
    if scale < 1:
        raise ValueError("scale must be at least 1")
    pixels = _colours(values, None if image is None else _gray(image, values.shape))
    return _png(_enlarged(pixels, scale))


def _gray(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``image`` scaled to [0, 1] (a constant image is 0.5)."""
    picture = np.asarray(image, dtype=np.float64)
    if picture.shape != shape:
        picture = picture.squeeze()
    if picture.shape != shape or not np.all(np.isfinite(picture)):
        raise ValueError(f"the image must be finite and of shape {shape}, not {image.shape}")
    low, high = float(picture.min()), float(picture.max())
    return np.full(shape, 0.5) if high == low else (picture - low) / (high - low)


def _colours(values: np.ndarray, gray: np.ndarray | None) -> np.ndarray:
    """RGB ``uint8 [h, w, 3]``: red or blue, as strong as ``|a| / max |a|``, over the base."""
    largest = float(np.abs(values).max())
    strength = np.abs(values) / largest if largest > 0 else np.zeros_like(values)
    base = (
        np.full((*values.shape, 3), 255.0)
        if gray is None
        else np.repeat(gray[..., None] * 255.0, 3, axis=2)
    )
    colour = np.where((values >= 0)[..., None], _RED, _BLUE)
    mixed = base * (1 - strength[..., None]) + colour * strength[..., None]
    pixels: np.ndarray = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return pixels


def _enlarged(pixels: np.ndarray, scale: int) -> np.ndarray:
    """``pixels`` enlarged ``scale`` times (nearest), no side longer than ``MAX_SIDE``."""
    height, width = pixels.shape[:2]
    factor = min(float(scale), MAX_SIDE / max(height, width))
    if factor >= 1:
        factor = float(int(factor))
    out_height, out_width = max(1, int(height * factor)), max(1, int(width * factor))
    rows = np.arange(out_height) * height // out_height
    columns = np.arange(out_width) * width // out_width
    enlarged: np.ndarray = pixels[rows][:, columns]
    return enlarged


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(pixels: np.ndarray) -> bytes:
    """``uint8 [h, w, 3]`` as a PNG file (each row with filter type 0)."""
    height, width = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + _chunk(b"IEND", b"")
    )
