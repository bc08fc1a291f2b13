"""CompressedImage decoding: compressed / compressedDepth wire formats, and every rejection."""

from __future__ import annotations

import array
import struct

import cv2
import numpy as np
import pytest

from llava3d_ros.geometry.compressed import (
    DecodeError,
    decode_compressed_color,
    decode_compressed_depth,
    decode_rvl,
    encode_rvl,
)
from llava3d_ros.geometry.errors import GeometryError

MAX = 640 * 480
RNG = np.random.default_rng(7)

# compressed_depth_image_transport's defaults: depth_quantization 100, depth_max 10 m
DEPTH_Z0, DEPTH_MAX = np.float32(100.0), np.float32(10.0)
QUANT_A = np.float32(DEPTH_Z0 * (DEPTH_Z0 + np.float32(1.0)))
QUANT_B = np.float32(np.float32(1.0) - QUANT_A / DEPTH_MAX)


def _encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def publish_color(rgb: np.ndarray, encoding: str, codec: str = "png") -> tuple[str, bytes]:
    """What compressed_image_transport sends for an Image of ``encoding`` holding ``rgb``.

    Colour images are converted to bgr8 before cv::imencode (target format "bgr8"); mono8 is
    encoded as is.
    """
    ext = ".png" if codec == "png" else ".jpg"
    if encoding == "mono8":
        return f"mono8; {codec} compressed ", _encode(ext, rgb[:, :, 0])
    return f"{encoding}; {codec} compressed bgr8", _encode(ext, rgb[:, :, ::-1])


def depth_header(a: float = 0.0, b: float = 0.0, fmt_code: int = 0) -> bytes:
    return struct.pack("<iff", fmt_code, a, b)


def quantise_inverse_depth(depth: np.ndarray) -> np.ndarray:
    """The publisher's 32FC1 quantisation: q = (uint16)(A / d + B) where d < depth_max, else 0."""
    q = np.zeros(depth.shape, np.uint16)
    with np.errstate(invalid="ignore"):
        ok = depth < DEPTH_MAX  # NaN compares false, as in the C++ loop
    q[ok] = (QUANT_A / depth[ok] + QUANT_B).astype(np.uint16)  # C float → unsigned: truncation
    return q


def publish_depth(depth: np.ndarray, codec: str = "png") -> tuple[str, bytes]:
    """What compressed_depth_image_transport sends for a 16UC1 (mm) or 32FC1 (m) image."""
    if depth.dtype == np.uint16:
        enc, image, header = "16UC1", depth, depth_header()
    else:
        enc, image, header = "32FC1", quantise_inverse_depth(depth), depth_header(QUANT_A, QUANT_B)
    if codec == "png":
        payload = _encode(".png", image)
    else:
        payload = struct.pack("<II", image.shape[1], image.shape[0]) + encode_rvl(image)
    return f"{enc}; compressedDepth {codec}", header + payload


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize("codec", ["png", "jpeg"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_pure_red_decodes_to_red(codec: str, encoding: str) -> None:
    red = np.zeros((24, 32, 3), np.uint8)
    red[..., 0] = 255
    fmt, data = publish_color(red, encoding, codec)
    out, enc = decode_compressed_color(fmt, data, MAX)
    assert enc == encoding and out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - red).max() <= 2  # JPEG rounding only


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_target_rgb8_means_the_file_holds_swapped_channels(codec: str) -> None:
    # a publisher that skipped the bgr8 conversion handed RGB memory to cv::imencode
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    data = _encode(".png" if codec == "png" else ".jpg", red)
    out, _ = decode_compressed_color(f"rgb8; {codec} compressed rgb8", data, MAX)
    assert np.abs(out.astype(int) - red).max() <= 2


def test_png_round_trip_is_exact() -> None:
    rgb = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        out, _ = decode_compressed_color(*publish_color(rgb, encoding, "png"), MAX)
        np.testing.assert_array_equal(out, rgb)


def test_jpeg_round_trip_is_close() -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    # smooth: JPEG-friendly
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)
    out, _ = decode_compressed_color(*publish_color(rgb, "rgb8", "jpeg"), MAX)
    assert np.abs(out.astype(float) - rgb).mean() < 3.0


@pytest.mark.parametrize("fmt", ["jpeg", "png", " png ", "jpg"])
def test_legacy_formats_hold_true_colours(fmt: str) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 200  # green
    data = _encode(".png" if "png" in fmt else ".jpg", rgb[:, :, ::-1])
    out, enc = decode_compressed_color(fmt, data, MAX)
    assert enc == "bgr8"
    assert np.abs(out.astype(int) - rgb).max() <= 3


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_grey_payloads_become_rgb(codec: str) -> None:
    grey = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (12, 1))
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    fmt, data = publish_color(rgb, "mono8", codec)
    out, enc = decode_compressed_color(fmt, data, MAX)
    assert enc == "mono8" and out.shape == (12, 24, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - grey).max() <= (0 if codec == "png" else 4)
    # a grey file under a colour format is a valid (grey) colour image too
    out2, _ = decode_compressed_color(f"rgb8; {codec} compressed bgr8", data, MAX)
    np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("order", ["bgra8", "rgba8"])
def test_four_channel_png_drops_alpha_honouring_the_order(order: str) -> None:
    rgb = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (9, 11, 1), dtype=np.uint8)
    memory = np.concatenate([rgb[:, :, ::-1] if order == "bgra8" else rgb, alpha], axis=2)
    out, _ = decode_compressed_color(
        f"{order}; png compressed {order}", _encode(".png", memory), MAX
    )
    np.testing.assert_array_equal(out, rgb)


def test_array_and_memoryview_data_are_accepted() -> None:
    rgb = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    fmt, data = publish_color(rgb, "rgb8")
    for wrapped in (array.array("B", data), memoryview(data), bytearray(data)):
        np.testing.assert_array_equal(decode_compressed_color(fmt, wrapped, MAX)[0], rgb)


def _png_with_size(w: int, h: int) -> bytes:
    data = bytearray(_encode(".png", np.zeros((4, 4, 3), np.uint8)))
    data[16:24] = struct.pack(">II", w, h)  # IHDR width/height (the CRC no longer matches)
    return bytes(data)


def _jpeg_with_size(w: int, h: int) -> bytes:
    data = bytearray(_encode(".jpg", np.zeros((8, 8, 3), np.uint8)))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


COLOUR_REJECTS = {
    "empty": ("rgb8; png compressed bgr8", b""),
    "garbage": ("rgb8; png compressed bgr8", bytes(RNG.integers(0, 256, 500, dtype=np.uint8))),
    "garbage jpeg": ("jpeg", b"\xff\xd8" + bytes(RNG.integers(0, 256, 500, dtype=np.uint8))),
    "png as jpeg": ("rgb8; jpeg compressed bgr8", _encode(".png", np.zeros((4, 4, 3), np.uint8))),
    "truncated png": ("png", _encode(".png", RNG.integers(0, 256, (20, 20, 3), np.uint8))[:-30]),
    "truncated png header": ("png", _encode(".png", np.zeros((4, 4, 3), np.uint8))[:20]),
    "truncated jpeg": ("jpeg", _encode(".jpg", RNG.integers(0, 256, (20, 20, 3), np.uint8))[:-40]),
    "truncated jpeg header": ("jpeg", _encode(".jpg", np.zeros((8, 8, 3), np.uint8))[:30]),
    "corrupt png body": (
        "png",
        (lambda b: b[:40] + bytes(len(b) - 40))(_encode(".png", np.ones((16, 16, 3), np.uint8))),
    ),
    "huge png": ("png", _png_with_size(100_000, 100_000)),
    "huge jpeg": ("jpeg", _jpeg_with_size(60_000, 60_000)),
    "over max_pixels": ("png", _encode(".png", np.zeros((481, 640, 3), np.uint8))),
    "zero-size png": ("png", _png_with_size(0, 4)),
    "16-bit colour": ("rgb8; png compressed bgr8", _encode(".png", np.ones((4, 4, 3), np.uint16))),
    "mono8 with colour payload": (
        "mono8; png compressed mono8",
        _encode(".png", np.ones((4, 4, 3), np.uint8)),
    ),
    "too many bytes": ("png", b"\x89PNG\r\n\x1a\n" + bytes(8 * MAX + 70_000)),
}
BAD_COLOUR_FORMATS = [
    "",
    "gif",
    "jpeg compressed",
    "rgb8; gif compressed bgr8",
    "rgb8; jpeg",
    "rgb8; jpeg compressed bgr8 extra",
    "rgb8; jpeg compressed bgr16",
    "rgb16; png compressed bgr16",
    "16UC1; compressedDepth png",
    "bayer_rggb8; jpeg compressed bgr8",
    "RGB8; jpeg compressed bgr8",
]


@pytest.mark.parametrize("case", sorted(COLOUR_REJECTS))
def test_malformed_colour_payloads_raise_decode_error(case: str) -> None:
    fmt, data = COLOUR_REJECTS[case]
    with pytest.raises(DecodeError) as info:
        decode_compressed_color(fmt, data, MAX)
    assert str(info.value).strip()
    assert isinstance(info.value, GeometryError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("fmt", BAD_COLOUR_FORMATS)
def test_unknown_colour_formats_raise_decode_error(fmt: str) -> None:
    data = _encode(".png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DecodeError, match="format|encoding"):
        decode_compressed_color(fmt, data, MAX)


def test_size_limits_are_inclusive_and_checked_before_decoding() -> None:
    data = _encode(".png", np.zeros((48, 64, 3), np.uint8))
    assert decode_compressed_color("png", data, 64 * 48)[0].shape == (48, 64, 3)
    with pytest.raises(DecodeError, match="max_image_pixels"):
        decode_compressed_color("png", data, 64 * 48 - 1)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(DecodeError, match="max_pixels"):
            decode_compressed_color("png", data, bad)


# --------------------------------------------------------------------------- depth


def _mm_depth(h: int = 48, w: int = 64) -> np.ndarray:
    depth = RNG.integers(300, 9000, (h, w)).astype(np.uint16)
    depth[RNG.random((h, w)) < 0.2] = 0
    return depth


@pytest.mark.parametrize("codec", ["png", "rvl"])
def test_16uc1_round_trip_is_exact(codec: str) -> None:
    depth = _mm_depth()
    fmt, data = publish_depth(depth, codec)
    out, enc = decode_compressed_depth(fmt, data, MAX)
    assert enc == "16UC1" and out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth", "16UC1", "16UC1; compressedDepth png"])
def test_16uc1_png_format_spellings(fmt: str) -> None:
    depth = _mm_depth(5, 7)
    data = depth_header() + _encode(".png", depth)
    np.testing.assert_array_equal(decode_compressed_depth(fmt, data, MAX)[0], depth)


@pytest.mark.parametrize("codec", ["png", "rvl"])
def test_32fc1_round_trip_within_quantisation(codec: str) -> None:
    depth = RNG.uniform(0.3, 9.9, (40, 50)).astype(np.float32)
    depth[RNG.random(depth.shape) < 0.1] = np.nan
    depth[0, :4] = [10.0, 12.0, np.inf, np.nan]  # at or beyond depth_max, or NaN: q = 0
    fmt, data = publish_depth(depth, codec)
    out, enc = decode_compressed_depth(fmt, data, MAX)
    assert enc == "32FC1" and out.dtype == np.float32 and out.shape == depth.shape
    q = quantise_inverse_depth(depth)
    np.testing.assert_array_equal(np.isnan(out), q == 0)
    assert not np.isinf(out).any() and (out[~np.isnan(out)] > 0).all()
    ok = (depth > 0) & (depth < DEPTH_MAX)
    ok[0, :4] = False
    # one quantisation step of q is |dd/dq| = d² / A metres; truncation loses at most one
    tol = depth[ok].astype(np.float64) ** 2 / float(QUANT_A) * 1.01 + 1e-6
    assert (np.abs(out[ok] - depth[ok]) <= tol).all()
    assert np.abs(out[ok] - depth[ok]).max() < 0.01  # < 1 cm at 9.9 m with the defaults


def test_32fc1_png_spelling_without_codec_and_float_header_values() -> None:
    depth = np.full((3, 4), 2.0, np.float32)
    data = depth_header(QUANT_A, QUANT_B) + _encode(".png", quantise_inverse_depth(depth))
    out, _ = decode_compressed_depth("32FC1; compressedDepth", data, MAX)
    assert np.abs(out - 2.0).max() < 2.0**2 / float(QUANT_A)


def test_rvl_known_stream() -> None:
    # [0, 0, 5, 7]: zeros 2, nonzeros 2, zigzag deltas 10 (two nibbles: 0xA, 0x1) and 4;
    # nibbles 2 2 A 1 4 0 0 0 → word 0x22A14000, little-endian
    stream = bytes.fromhex("0040a122")
    np.testing.assert_array_equal(decode_rvl(stream, 4, 1), [[0, 0, 5, 7]])
    assert encode_rvl(np.array([[0, 0, 5, 7]], np.uint16)) == stream


def test_rvl_handles_wrapping_deltas_and_long_runs() -> None:
    img = np.zeros((30, 40), np.uint16)
    img[3, 5:25] = [65535, 1, 65534, 2] * 5  # deltas that wrap mod 2^16
    img[10:, 7] = 1234
    np.testing.assert_array_equal(decode_rvl(encode_rvl(img), 40, 30), img)


def test_rvl_real_frame_round_trip() -> None:
    from .realdata import seven_frame

    _, depth, _, _ = seven_frame(150)
    fmt, data = publish_depth(depth, "rvl")
    assert len(data) < depth.nbytes / 2
    np.testing.assert_array_equal(decode_compressed_depth(fmt, data, MAX)[0], depth)


def _rvl(cols: int, rows: int, stream: bytes) -> bytes:
    return depth_header() + struct.pack("<II", cols, rows) + stream


GOOD_PNG16 = _encode(".png", _mm_depth(6, 8))
DEPTH_REJECTS = {
    "empty": ("16UC1; compressedDepth", b""),
    "header only": ("16UC1; compressedDepth", depth_header()),
    "truncated header": ("16UC1; compressedDepth", depth_header()[:7]),
    "garbage after header": ("16UC1; compressedDepth", depth_header() + b"not a png at all"),
    "truncated png": ("16UC1; compressedDepth", depth_header() + GOOD_PNG16[:-20]),
    "8-bit png": (
        "16UC1; compressedDepth",
        depth_header() + _encode(".png", np.ones((4, 4), np.uint8)),
    ),
    "3-channel png": (
        "16UC1; compressedDepth",
        depth_header() + _encode(".png", np.ones((4, 4, 3), np.uint16)),
    ),
    "huge png": ("16UC1; compressedDepth png", depth_header() + _png_with_size(70_000, 70_000)),
    "non-finite quantisation": (
        "32FC1; compressedDepth png",
        depth_header(float("nan"), 1.0) + GOOD_PNG16,
    ),
    "rvl no size": ("16UC1; compressedDepth rvl", depth_header() + b"\x01\x00\x00"),
    "rvl zero size": ("16UC1; compressedDepth rvl", _rvl(0, 4, b"\x00" * 8)),
    "rvl huge size": ("16UC1; compressedDepth rvl", _rvl(2**31, 2**31, b"\x00" * 8)),
    "rvl over max_pixels": ("16UC1; compressedDepth rvl", _rvl(641, 480, b"\x00" * 8)),
    "rvl empty stream": ("16UC1; compressedDepth rvl", _rvl(4, 4, b"")),
    "rvl stream too short": (
        "16UC1; compressedDepth rvl",
        _rvl(4, 4, encode_rvl(np.ones((2, 4), np.uint16))),
    ),
    "rvl runs overflow": ("16UC1; compressedDepth rvl", _rvl(2, 1, bytes.fromhex("00004015"))),
    "rvl endless value": ("32FC1; compressedDepth rvl", _rvl(2, 2, b"\xff" * 16)),
    "too many bytes": ("16UC1; compressedDepth", depth_header() + bytes(8 * MAX + 70_000)),
}
BAD_DEPTH_FORMATS = [
    "",
    "png",
    "mono16; compressedDepth",
    "8UC1; compressedDepth",
    "16UC1; compressedDepth jpeg",
    "16UC1; compressedDepth png extra",
    "16UC1; compressed",
    "16UC1; png compressed",
    "32FC1;",
    "rgb8; compressedDepth",
]


@pytest.mark.parametrize("case", sorted(DEPTH_REJECTS))
def test_malformed_depth_payloads_raise_decode_error(case: str) -> None:
    fmt, data = DEPTH_REJECTS[case]
    with pytest.raises(DecodeError) as info:
        decode_compressed_depth(fmt, data, MAX)
    assert str(info.value).strip()


@pytest.mark.parametrize("fmt", BAD_DEPTH_FORMATS)
def test_unknown_depth_formats_raise_decode_error(fmt: str) -> None:
    with pytest.raises(DecodeError, match="format|encoding"):
        decode_compressed_depth(fmt, depth_header() + GOOD_PNG16, MAX)


def test_weird_quantisation_never_gives_inf_or_negative_depth() -> None:
    q = np.array([[0, 1, 2, 3, 65535]], np.uint16)
    data = depth_header(5.0, 2.0) + _encode(".png", q)  # q − B: −2, −1, 0, 1, 65533
    out, _ = decode_compressed_depth("32FC1; compressedDepth", data, MAX)
    assert np.isnan(out[0, :3]).all()
    np.testing.assert_allclose(out[0, 3:], [5.0, 5.0 / 65533.0], rtol=1e-6)
