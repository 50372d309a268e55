"""PNG heatmaps: valid files of the right size, red for positive, blue for negative."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from openmaas.explain.heatmap import heatmap_png, to_2d

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes) -> np.ndarray:
    """The pixels ``uint8 [h, w, 3]`` of an 8-bit RGB PNG without filters, checking it."""
    assert png[:8] == SIGNATURE
    position, chunks = 8, []
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        data = png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks.append((kind, data))
        position += 12 + length
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert np.all(rows[:, 0] == 0)  # filter type None on every row
    return rows[:, 1:].reshape(height, width, 3)


def _blue_dominant(pixels: np.ndarray) -> int:
    return int(np.sum(pixels[..., 2].astype(int) > pixels[..., 0].astype(int)))


def test_a_map_is_a_valid_png_enlarged_by_the_scale() -> None:
    values = np.random.default_rng(0).normal(size=(8, 8))
    pixels = decode(heatmap_png(values))
    assert pixels.shape == (64, 64, 3)
    block = pixels[8:16, 24:32].reshape(-1, 3)
    assert np.all(block == block[0])  # nearest: each value is one 8x8 block
    assert decode(heatmap_png(values, scale=1)).shape == (8, 8, 3)


def test_colours_follow_the_sign_and_the_strength() -> None:
    values = np.array([[0.0, 1.0, 0.5], [-2.0, -1.0, 4.0]])
    pixels = decode(heatmap_png(values, scale=1))
    assert pixels[1, 2].tolist() == [255, 0, 0]  # the largest |a|: pure red
    assert pixels[1, 0].tolist() == [128, 128, 255]  # half as strong, negative
    assert pixels[0, 0].tolist() == [255, 255, 255]  # nothing: white
    assert pixels[0, 1, 0] == 255
    assert pixels[0, 1, 2] < pixels[0, 2, 2]  # stronger is redder


def test_a_positive_map_has_no_blue_and_a_negative_one_no_red() -> None:
    values = np.random.default_rng(1).uniform(0, 3, (10, 7))
    image = np.random.default_rng(2).uniform(0, 16, (10, 7))
    for picture in (None, image):
        assert _blue_dominant(decode(heatmap_png(values, picture))) == 0
        negative = decode(heatmap_png(-values, picture))
        assert np.sum(negative[..., 0].astype(int) > negative[..., 2].astype(int)) == 0
        assert _blue_dominant(negative) > 0


def test_the_image_shows_in_gray_where_nothing_is_attributed() -> None:
    values = np.zeros((2, 2))
    values[0, 0] = 1.0
    image = np.array([[0.0, 16.0], [8.0, 4.0]])
    pixels = decode(heatmap_png(values, image[None], scale=1))  # [1, h, w] is fine too
    assert pixels[0, 0].tolist() == [255, 0, 0]
    assert pixels[0, 1].tolist() == [255, 255, 255]
    assert pixels[1, 0].tolist() == [128, 128, 128]
    assert pixels[1, 1].tolist() == [64, 64, 64]


def test_no_side_passes_1024_pixels() -> None:
    assert decode(heatmap_png(np.ones((300, 200)))).shape == (900, 600, 3)
    assert decode(heatmap_png(np.ones((128, 128)), scale=20)).shape == (1024, 1024, 3)
    tall = decode(heatmap_png(np.ones((2000, 10))))
    assert tall.shape == (1024, 5, 3)


def test_bad_maps_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        heatmap_png(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        heatmap_png(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="scale"):
        heatmap_png(np.zeros((2, 2)), scale=0)
    with pytest.raises(ValueError, match="image"):
        heatmap_png(np.zeros((2, 2)), np.zeros((3, 2)))


def test_to_2d_sums_every_other_axis() -> None:
    attributions = np.random.default_rng(3).normal(size=(2, 4, 5, 3))
    flat = to_2d(attributions, (1, 2))
    assert flat.shape == (4, 5)
    assert np.allclose(flat, attributions.sum(axis=(0, 3)))
    assert np.allclose(to_2d(attributions, (-2, -3)), flat.T)
    single = attributions[:1, :, :, :1]
    assert np.array_equal(to_2d(single, (1, 2)), single[0, :, :, 0])
    with pytest.raises(ValueError, match="axes"):
        to_2d(attributions, (1, 1))
    with pytest.raises(ValueError, match="axes"):
        to_2d(attributions, (1, 4))
