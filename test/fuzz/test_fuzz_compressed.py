"""Fuzz CompressedImage decoding: any format and payload decodes sanely or raises DecodeError."""

from __future__ import annotations

import functools
import struct

import cv2
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from llava3d_ros.geometry.compressed import (
    DecodeError,
    decode_compressed_color,
    decode_compressed_depth,
    encode_rvl,
)

from .profile import check_rejection, count, fuzz

MAX_PIXELS = 64 * 48

COLOUR_FORMATS = [
    "jpeg",
    "png",
    "rgb8; jpeg compressed bgr8",
    "bgr8; png compressed bgr8",
    "rgb8; png compressed rgb8",
    "rgba8; png compressed bgra8",
    "mono8; jpeg compressed ",
    "mono8; png compressed mono8",
    "rgb8; jpeg compressed bgr16",
    "16UC1; compressedDepth",
    "",
    "gif",
]
DEPTH_FORMATS = [
    "16UC1; compressedDepth",
    "16UC1; compressedDepth png",
    "16UC1; compressedDepth rvl",
    "32FC1; compressedDepth",
    "32FC1; compressedDepth rvl",
    "32FC1",
    "16UC1; compressedDepth jpeg",
    "rgb8; jpeg compressed bgr8",
    "",
]


def _imencode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@functools.cache
def _seeds() -> tuple[tuple[tuple[str, ...], bytes], ...]:
    """Well-formed payloads of every kind with formats that match them, to mutate."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    mm = rng.integers(0, 5000, (12, 16)).astype(np.uint16)
    mm[rng.random(mm.shape) < 0.3] = 0
    header = struct.pack("<iff", 0, 10100.0, -1009.0)
    colour = ("jpeg", "rgb8; jpeg compressed bgr8", "rgb8; jpeg compressed rgb8")
    png = ("png", "bgr8; png compressed bgr8", "rgba8; png compressed rgba8")
    depth_png = ("16UC1; compressedDepth", "32FC1; compressedDepth png", "32FC1")
    depth_rvl = ("16UC1; compressedDepth rvl", "32FC1; compressedDepth rvl")
    return (
        (colour, _imencode(".jpg", rgb)),
        (png, _imencode(".png", rgb)),
        (("mono8; png compressed mono8", *png), _imencode(".png", rgb[:, :, 0])),
        (("mono8; jpeg compressed ", *colour), _imencode(".jpg", rgb[:, :, 0])),
        (png, _imencode(".png", np.dstack([rgb, rgb[:, :, :1]]))),
        (depth_png, header + _imencode(".png", mm)),
        (depth_rvl, header + struct.pack("<II", 16, 12) + encode_rvl(mm)),
    )


def _mutate(draw: st.DrawFn, data: bytearray) -> bytes:
    """A valid payload as it is, truncated, bit-flipped, spliced or with a size field patched."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "size", "valid"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "splice":
        i = draw(st.integers(0, len(data)))
        return bytes(data[:i] + draw(st.binary(max_size=40)) + data[i:])
    if kind == "size":  # a size field (PNG IHDR / RVL header) rewritten, anywhere in the first 40
        i = draw(st.integers(0, max(0, min(len(data), 40) - 4)))
        data[i : i + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 65535, 2**31, 2**32 - 1])))
        return bytes(data)
    return bytes(data)


@st.composite
def cases(draw: st.DrawFn, formats: list[str], depth: bool) -> tuple[str, bytes]:
    """(format, data): mostly a mutated payload under a matching format, else anything.

    Seeds of the other decoder (colour files for depth, depth payloads for colour) come in
    only under "any format" (``formats`` mixes both kinds).
    """
    mode = draw(st.sampled_from(["matched", "matched", "any format", "random bytes"]))
    if mode == "random bytes":
        fmt = draw(st.one_of(st.sampled_from(formats), st.text(max_size=30)))
        return fmt, draw(st.binary(max_size=300))
    seeds = [s for s in _seeds() if ("C1" in s[0][0]) == depth] if mode == "matched" else _seeds()
    seed_formats, seed = draw(st.sampled_from(seeds))
    pool = seed_formats if mode == "matched" else formats
    return draw(st.sampled_from(pool)), _mutate(draw, bytearray(seed))


@fuzz
@given(case=cases(COLOUR_FORMATS, depth=False))
def test_colour_payloads_decode_or_raise_decode_error(case: tuple[str, bytes]) -> None:
    count("compressed colour → RGB")
    fmt, data = case
    try:
        rgb, encoding = decode_compressed_color(fmt, data, MAX_PIXELS)
    except DecodeError as exc:
        check_rejection(exc)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert 0 < rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS
    assert rgb.flags.c_contiguous
    assert encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


@fuzz
@given(case=cases(DEPTH_FORMATS, depth=True))
def test_depth_payloads_decode_or_raise_decode_error(case: tuple[str, bytes]) -> None:
    count("compressedDepth → depth")
    fmt, data = case
    try:
        depth, encoding = decode_compressed_depth(fmt, data, MAX_PIXELS)
    except DecodeError as exc:
        check_rejection(exc)
        return
    assert depth.ndim == 2 and 0 < depth.size <= MAX_PIXELS
    if encoding == "16UC1":
        assert depth.dtype == np.uint16
    else:
        assert encoding == "32FC1" and depth.dtype == np.float32
        assert not np.isinf(depth).any(), "invalid depth must be NaN, not inf"
        assert (depth[np.isfinite(depth)] > 0).all(), "valid depth must be positive"
