"""Fuzz Image → array: random headers and buffers either decode exactly or raise ConversionError."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from sensor_msgs.msg import Image

from llava3d_ros.ros.convert import (
    _ENCODINGS,
    ConversionError,
    color_from_image,
    depth_from_image,
    image_to_array,
)

from .profile import check_rejection, count, fuzz

ENCODINGS = [*_ENCODINGS, "bayer_rggb8", "", "RGB8", "16SC1", "rgb16", "32FC3", "8UC3"]
DECODERS = {"array": image_to_array, "colour": color_from_image, "depth": depth_from_image}
U32 = 2**32 - 1

# sizes near the real ones, plus header values a broken driver could send
_sizes = st.one_of(st.integers(0, 9), st.sampled_from([16384, 16385, 65535, U32]))


def _message(enc: str, h: int, w: int, step: int, big: bool, data: bytes) -> Image:
    msg = Image()
    msg.encoding, msg.height, msg.width, msg.step = enc, h, w, step
    msg.is_bigendian = big
    msg.data = data
    return msg


@st.composite
def headers_and_data(draw: st.DrawFn) -> Image:
    """Any header; data either of a random length or of exactly step*height bytes."""
    enc = draw(st.sampled_from(ENCODINGS))
    h, w = draw(_sizes), draw(_sizes)
    itemsize, channels = (
        (_ENCODINGS[enc][0].itemsize, _ENCODINGS[enc][1]) if enc in _ENCODINGS else (1, 3)
    )
    plausible_step = w * itemsize * channels + draw(st.integers(-3, 8))
    step = draw(st.one_of(st.just(max(plausible_step, 0)), st.integers(0, U32)))
    n = step * h if step * h <= 4096 and draw(st.booleans()) else draw(st.integers(0, 600))
    data = draw(st.binary(min_size=n, max_size=n))
    return _message(enc, h, w, min(step, U32), draw(st.booleans()), data)


@fuzz
@given(msg=headers_and_data(), decoder=st.sampled_from(sorted(DECODERS)))
def test_any_image_header_decodes_or_is_rejected(msg: Image, decoder: str) -> None:
    count("image header/data → array")
    try:
        out = DECODERS[decoder](msg)
    except ConversionError as exc:
        check_rejection(exc)
        return
    assert out.shape[:2] == (msg.height, msg.width)
    if decoder == "colour":
        assert out.dtype == np.uint8 and out.shape[2] == 3
    if decoder == "depth":
        assert out.dtype == np.float32
        finite = out[np.isfinite(out)]
        assert np.all(finite > 0), "valid depth must be positive"
        assert not np.isinf(out).any(), "invalid depth must be NaN, not inf"


@st.composite
def valid_images(draw: st.DrawFn) -> tuple[Image, np.ndarray]:
    """A well-formed image with row padding and either byte order, and the pixels it holds."""
    enc = draw(st.sampled_from(list(_ENCODINGS)))
    dtype, channels = _ENCODINGS[enc]
    h, w, pad = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(0, 3))
    big = draw(st.booleans())
    shape = (h, w) if channels == 1 else (h, w, channels)
    raw = draw(
        st.binary(
            min_size=h * w * channels * dtype.itemsize, max_size=h * w * channels * dtype.itemsize
        )
    )
    pixels = np.frombuffer(raw, dtype=dtype.newbyteorder(">" if big else "<")).reshape(shape)
    rows = pixels.reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, rows.shape[1] + pad * dtype.itemsize), np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = _message(enc, h, w, padded.shape[1], big, padded.tobytes())
    return msg, pixels.astype(dtype.newbyteorder("="))


@fuzz
@given(case=valid_images())
def test_valid_images_decode_exactly(case: tuple[Image, np.ndarray]) -> None:
    count("valid image → exact pixels")
    msg, pixels = case
    out = image_to_array(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out.view(np.uint8), np.ascontiguousarray(pixels).view(np.uint8))
