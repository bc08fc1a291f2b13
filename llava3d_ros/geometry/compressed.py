"""Decoding sensor_msgs/CompressedImage payloads: ``compressed`` colour and ``compressedDepth``.

ROS-free: the node passes the message's ``format`` string and ``data`` bytes. Wire formats
follow ros-perception/image_transport_plugins:

* colour (compressed_image_transport): ``format`` is ``"<encoding>; jpeg compressed <target>"``
  or ``"...; png compressed <target>"``; older publishers write just ``"jpeg"`` or ``"png"``.
  ``data`` is the JPEG/PNG file. ``<target>`` names the channel order of the array that the
  publisher handed to ``cv::imencode``, hence of the array ``cv2.imdecode`` gives back
  (``bgr8``: the file holds true colours; ``rgb8``: red and blue are swapped in the file).
  Without a target (legacy formats), the file is taken to hold true colours, i.e. BGR as
  decoded, which is what those publishers produced (they converted to bgr8 first).
* depth (compressed_depth_image_transport): ``format`` is ``"16UC1; compressedDepth"``,
  ``"16UC1; compressedDepth png"`` or ``"...; compressedDepth rvl"`` (32FC1 alike); a format
  without ``;`` is the oldest form, PNG. ``data`` starts with a 12-byte little-endian header:
  int32 compression format (ignored, as the reference decoder does), float32 depthQuantA,
  float32 depthQuantB; then the PNG, or for RVL uint32 cols, uint32 rows and the RVL stream.
  16UC1: the image is the millimetre depth as it is (A and B unused). 32FC1: the image is a
  quantised inverse depth q, depth = A / (q − B) metres, q = 0 invalid.

Invalid depth: 16UC1 comes back as the raw uint16 image (0 — and 65535 — stay as they are,
for :func:`llava3d_ros.geometry.depth.decode_depth` to turn into NaN, exactly like a raw
16UC1 Image); 32FC1 comes back as float32 metres with NaN where invalid (q = 0, or a depth that
is not finite and positive), the convention of ``decode_depth`` and of the reference decoder.

Every rejection is a :class:`DecodeError` (a ``GeometryError``, hence a ``ValueError``) with a
message saying why: unknown format string, truncated header, corrupt payload, wrong channel
count or bit depth, or an image larger than ``max_pixels`` (checked from the PNG/JPEG/RVL
header before anything is decoded, and again on the decoded array).
"""

from __future__ import annotations

import re
import struct

import cv2
import numpy as np

from llava3d_ros.geometry.errors import GeometryError

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
DEPTH_HEADER_BYTES = 12  # int32 format, float32 depthQuantA, float32 depthQuantB
_DEPTH_HEADER = struct.Struct("<iff")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8"
# compressed data may exceed the raw size (PNG of noise, RVL worst case 1.5×) but not by this
_BYTES_PER_PIXEL_BOUND = 8
_BYTES_SLACK = 1 << 16


class DecodeError(GeometryError):
    """A CompressedImage payload or format string that cannot be decoded (the message says why)."""


def decode_compressed_color(fmt: str, data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """(H, W, 3) uint8 RGB and the declared encoding of a ``compressed`` colour payload.

    ``fmt`` is the message's ``format``; grey images become RGB by repeating the channel, alpha
    is dropped. The declared encoding is returned as written (``"bgr8"`` for legacy formats,
    whose publishers sent bgr8).
    """
    encoding, codec, target = _parse_color_format(fmt)
    buf = _as_buffer(data, max_pixels)
    _check_header_size(buf, codec, max_pixels)
    img = _imdecode(buf)
    if img.dtype != np.uint8:
        raise DecodeError(f"colour payload has {img.dtype} samples, expected 8-bit ({fmt!r})")
    _check_decoded_size(img, max_pixels)
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels == 1:
        grey = img if img.ndim == 2 else img[:, :, 0]
        return np.repeat(grey[:, :, None], 3, axis=2), encoding
    if target == "mono8" or encoding == "mono8":
        raise DecodeError(f"format {fmt!r} declares mono8 but the payload has {channels} channels")
    if channels not in (3, 4):
        raise DecodeError(f"colour payload has {channels} channels, expected 1, 3 or 4")
    # target rgb*: the publisher encoded RGB memory as if it were BGR, so it decodes as RGB;
    # otherwise the file holds true colours, which cv2 decodes as BGR(A)
    swapped = target is not None and target.startswith("rgb")
    rgb = img[:, :, :3] if swapped else img[:, :, 2::-1]
    return np.ascontiguousarray(rgb), encoding


def decode_compressed_depth(fmt: str, data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """The depth image and its encoding from a ``compressedDepth`` payload.

    ``16UC1`` → (H, W) uint16 millimetres as sent (0 invalid); ``32FC1`` → (H, W) float32
    metres, NaN where invalid.
    """
    encoding, codec = _parse_depth_format(fmt)
    buf = _as_buffer(data, max_pixels)
    if buf.size <= DEPTH_HEADER_BYTES:  # the reference decoder needs more than the header
        raise DecodeError(
            f"compressedDepth data holds {buf.size} bytes, not more than its "
            f"{DEPTH_HEADER_BYTES}-byte header"
        )
    _fmt_code, quant_a, quant_b = _DEPTH_HEADER.unpack_from(buf.tobytes()[:DEPTH_HEADER_BYTES])
    payload = buf[DEPTH_HEADER_BYTES:]
    if codec == "rvl":
        q = _decode_rvl_payload(payload, max_pixels)
    else:
        _check_header_size(payload, "png", max_pixels)
        q = _imdecode(payload)
        if q.ndim != 2 or q.dtype != np.uint16:
            channels = q.shape[2] if q.ndim == 3 else 1
            raise DecodeError(
                f"compressedDepth PNG must be 16-bit single-channel, got {channels} channel(s) "
                f"of {q.dtype}"
            )
        _check_decoded_size(q, max_pixels)
    if encoding == "16UC1":
        return q, encoding
    if not (np.isfinite(quant_a) and np.isfinite(quant_b)):
        raise DecodeError(f"compressedDepth quantisation A={quant_a}, B={quant_b} is not finite")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth = np.float32(quant_a) / (q.astype(np.float32) - np.float32(quant_b))
        depth[(q == 0) | ~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth, encoding


# --------------------------------------------------------------------------- format strings


def _parse_color_format(fmt: str) -> tuple[str, str, str | None]:
    """(declared encoding, codec "jpeg"/"png", target channel order or None)."""
    if not isinstance(fmt, str):
        raise DecodeError(f"format must be a string, got {type(fmt).__name__}")
    text = fmt.strip()
    if ";" not in text:
        codec = text.lower()
        if codec not in ("jpeg", "jpg", "png"):
            raise DecodeError(f"unknown compressed image format {fmt!r}")
        return "bgr8", "png" if codec == "png" else "jpeg", None
    encoding, _, rest = text.partition(";")
    encoding = encoding.strip()
    if encoding not in COLOR_ENCODINGS:
        raise DecodeError(
            f"compressed colour encoding {encoding!r} (format {fmt!r}) is not one of "
            f"{', '.join(COLOR_ENCODINGS)}"
        )
    words = rest.split()
    if len(words) not in (2, 3) or words[0] not in ("jpeg", "png") or words[1] != "compressed":
        raise DecodeError(f"unknown compressed image format {fmt!r}")
    target = words[2] if len(words) == 3 else None
    if target is not None and target not in COLOR_ENCODINGS:
        raise DecodeError(
            f"compressed target format {target!r} (format {fmt!r}) is not one of "
            f"{', '.join(COLOR_ENCODINGS)} (16-bit colour is not supported)"
        )
    return encoding, words[0], target


def _parse_depth_format(fmt: str) -> tuple[str, str]:
    """(encoding "16UC1"/"32FC1", codec "png"/"rvl")."""
    if not isinstance(fmt, str):
        raise DecodeError(f"format must be a string, got {type(fmt).__name__}")
    encoding, sep, rest = fmt.strip().partition(";")
    encoding = encoding.strip()
    if encoding not in DEPTH_ENCODINGS:
        raise DecodeError(
            f"compressedDepth encoding {encoding!r} (format {fmt!r}) is not one of "
            f"{', '.join(DEPTH_ENCODINGS)}"
        )
    if not sep:
        return encoding, "png"  # the oldest publishers: encoding only, always PNG
    words = rest.split()
    if words == ["compressedDepth"]:
        return encoding, "png"
    if len(words) == 2 and words[0] == "compressedDepth" and words[1] in ("png", "rvl"):
        return encoding, words[1]
    raise DecodeError(f"unknown compressedDepth format {fmt!r}")


# --------------------------------------------------------------------------- size checks


def _as_buffer(data: bytes, max_pixels: int) -> np.ndarray:
    """``data`` as a uint8 array, refusing payloads far larger than ``max_pixels`` can need."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise DecodeError(f"max_pixels must be an integer, got {max_pixels!r}")
    if max_pixels < 1:
        raise DecodeError(f"max_pixels must be positive, got {max_pixels}")
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"data must be bytes, got {type(data).__name__}") from exc
    limit = _BYTES_PER_PIXEL_BOUND * int(max_pixels) + _BYTES_SLACK
    if buf.size > limit:
        raise DecodeError(
            f"compressed data holds {buf.size} bytes, more than any image of at most "
            f"max_image_pixels={max_pixels} pixels needs ({limit})"
        )
    if buf.size == 0:
        raise DecodeError("compressed data is empty")
    return buf


def _check_size(w: int, h: int, max_pixels: int, what: str) -> None:
    if w < 1 or h < 1:
        raise DecodeError(f"{what} declares an empty image ({w}x{h})")
    if w * h > max_pixels:
        raise DecodeError(
            f"{what} declares {w}x{h} = {w * h} pixels, more than max_image_pixels={max_pixels}"
        )


def _check_decoded_size(img: np.ndarray, max_pixels: int) -> None:
    h, w = img.shape[:2]
    _check_size(int(w), int(h), max_pixels, "decoded image")


def _check_header_size(buf: np.ndarray, codec: str, max_pixels: int) -> None:
    """Read width × height from the PNG IHDR or the JPEG SOF marker, before decoding.

    cv2 has no header-only API; this keeps a tiny file that declares a huge image (a
    decompression bomb) from allocating it. The codec must match the file's magic bytes.
    """
    head = buf[:32].tobytes()
    if codec == "png":
        if not head.startswith(_PNG_MAGIC):
            raise DecodeError("payload is not a PNG file (bad signature)")
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise DecodeError("PNG file is truncated before its IHDR header")
        w, h = struct.unpack(">II", head[16:24])
        _check_size(w, h, max_pixels, "PNG header")
        return
    if not head.startswith(_JPEG_MAGIC):
        raise DecodeError("payload is not a JPEG file (bad signature)")
    w, h = _jpeg_size(buf)
    _check_size(w, h, max_pixels, "JPEG header")


# SOF0-3, 5-7, 9-11, 13-15 carry the frame size; C4 (DHT), C8 (JPG), CC (DAC) do not
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_MARKER = re.compile(rb"\xff+([^\xff])")  # fill bytes, then the marker code
_JPEG_MAX_SEGMENTS = 4096  # real files have a few dozen before the scan


def _jpeg_size(buf: np.ndarray) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF segment; the file must end its scan with EOI.

    Segments are walked from SOI to the first scan (SOS); the entropy-coded data after it
    stuffs every 0xFF, so the first 0xFFD9 after SOS is the end of the image. OpenCV ≥ 5
    refuses a truncated JPEG, older libjpeg builds return it grey-filled: checked here.
    """
    data = buf.tobytes()
    i, n, size = 2, len(data), None
    for _ in range(_JPEG_MAX_SEGMENTS):
        m = _JPEG_MARKER.search(data, i)  # tolerates junk between segments, as libjpeg does
        if m is None:
            raise DecodeError("JPEG file ends before its image data (SOF/SOS) is complete")
        marker, i = m.group(1)[0], m.end()
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers: no length
            continue
        if marker == 0xD9:
            raise DecodeError("JPEG file ends (EOI) before any scan data")
        if i + 2 > n:
            raise DecodeError("JPEG file is truncated inside a segment header")
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            raise DecodeError(f"JPEG segment 0xFF{marker:02X} has a bad length {length}")
        if i + length > n:
            raise DecodeError(f"JPEG file is truncated inside segment 0xFF{marker:02X}")
        if marker in _JPEG_SOF and size is None:
            if length < 7:
                raise DecodeError("JPEG frame (SOF) header is too short")
            size = ((data[i + 5] << 8) | data[i + 6], (data[i + 3] << 8) | data[i + 4])
        if marker == 0xDA:  # start of scan
            if size is None:
                raise DecodeError("JPEG file has no frame (SOF) header before its scan data")
            if data.find(b"\xff\xd9", i + length) < 0:
                raise DecodeError("JPEG file is truncated: its scan data has no end (EOI)")
            return size
        i += length
    raise DecodeError(f"JPEG file has more than {_JPEG_MAX_SEGMENTS} segments before its scan")


def _imdecode(buf: np.ndarray) -> np.ndarray:
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise DecodeError(f"corrupt image payload: {exc}".strip()) from exc
    if img is None or img.size == 0:
        raise DecodeError(f"corrupt image payload: OpenCV could not decode {buf.size} bytes")
    return img


# --------------------------------------------------------------------------- RVL

# RVL (Wilson 2017, "Fast lossless depth image compression"), as compressed_depth_image_transport
# writes it. No maintained Python package decodes it, hence this small numpy decoder.
# The stream is little-endian int32 words, each holding 8 nibbles, most significant first. A
# value is a run of nibbles, least significant 3 bits first, bit 3 set on every nibble but
# the last. Values come as (zeros, nonzeros, then `nonzeros` zigzag deltas) repeated until
# all pixels are filled; a delta is relative to the previous non-zero pixel (start: 0), mod 2¹⁶.
_RVL_MAX_NIBBLES = 11  # 33 bits: more than any count or delta needs


def _decode_rvl_payload(payload: np.ndarray, max_pixels: int) -> np.ndarray:
    if payload.size < 8:
        raise DecodeError(f"RVL payload holds {payload.size} bytes, less than its 8-byte size")
    cols, rows = struct.unpack("<II", payload[:8].tobytes())
    _check_size(int(cols), int(rows), max_pixels, "RVL header")
    return decode_rvl(payload[8:].tobytes(), int(cols), int(rows))


def decode_rvl(stream: bytes, cols: int, rows: int) -> np.ndarray:
    """(rows, cols) uint16 image from an RVL stream; ``DecodeError`` if it is malformed.

    Vectorised except for a Python loop over (zeros, nonzeros) run pairs.
    """
    n_pixels = cols * rows
    # at most 8 nibbles a pixel (1-nibble runs around a 6-nibble delta): later bytes are never
    # read (the reference decoder stops there too), and memory stays bounded by the image size
    raw = np.frombuffer(stream, dtype=np.uint8)[: 4 * n_pixels + 16]
    words = raw[: raw.size - raw.size % 4].view("<u4")
    if words.size == 0:
        raise DecodeError("RVL stream is empty")
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    nibbles = ((words[:, None] >> shifts[None, :]) & np.uint32(0xF)).astype(np.uint8).ravel()
    last = (nibbles & 0x8) == 0  # a nibble without the continuation bit ends a value
    ends = np.flatnonzero(last)
    if ends.size == 0:
        raise DecodeError("RVL stream holds no complete value")
    starts = np.concatenate(([0], ends[:-1] + 1))
    if int((ends - starts).max()) + 1 > _RVL_MAX_NIBBLES:
        raise DecodeError("RVL stream holds a value longer than any pixel count or delta")
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    pos = np.arange(group.size) - starts[group]
    contrib = (nibbles[: group.size] & 0x7).astype(np.int64) << (3 * pos)
    values = np.bincount(group, weights=contrib, minlength=ends.size)
    values = np.rint(values).astype(np.int64)  # < 2³³: exact in float64

    # walk the runs: value index of each (zeros, nonzeros) header and where its pixels go
    delta_first: list[int] = []  # value index of the first delta of each nonzero run
    pixel_first: list[int] = []  # pixel index of the first pixel of each nonzero run
    run_len: list[int] = []
    vals = values.tolist()
    i, pixel, n_vals = 0, 0, len(vals)
    while pixel < n_pixels:
        if i + 2 > n_vals:
            raise DecodeError(f"RVL stream ends after {pixel} of {n_pixels} pixels")
        zeros, nonzeros = vals[i], vals[i + 1]
        pixel += zeros
        if pixel + nonzeros > n_pixels:
            raise DecodeError(f"RVL runs overflow the {cols}x{rows} image")
        if nonzeros:
            if i + 2 + nonzeros > n_vals:
                raise DecodeError(f"RVL stream ends inside a run at pixel {pixel}")
            delta_first.append(i + 2)
            pixel_first.append(pixel)
            run_len.append(nonzeros)
        pixel += nonzeros
        i += 2 + nonzeros

    out = np.zeros(n_pixels, dtype=np.uint16)
    if run_len:
        lens = np.asarray(run_len, dtype=np.int64)
        offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        v_idx = np.repeat(np.asarray(delta_first, dtype=np.int64), lens) + offsets
        p_idx = np.repeat(np.asarray(pixel_first, dtype=np.int64), lens) + offsets
        positive = values[v_idx]
        delta = (positive >> 1) ^ -(positive & 1)  # zigzag
        out[p_idx] = (np.cumsum(delta) & 0xFFFF).astype(np.uint16)
    return out.reshape(rows, cols)


def encode_rvl(image: np.ndarray) -> bytes:
    """The RVL stream of a uint16 image (the inverse of :func:`decode_rvl`; for tests/tools)."""
    flat = np.ascontiguousarray(image, dtype=np.uint16).ravel().tolist()
    nibbles: list[int] = []

    def vle(value: int) -> None:
        while True:
            nib = value & 0x7
            value >>= 3
            nibbles.append(nib | 0x8 if value else nib)
            if not value:
                return

    i, n, previous = 0, len(flat), 0
    while i < n:
        j = i
        while j < n and flat[j] == 0:
            j += 1
        vle(j - i)
        k = j
        while k < n and flat[k] != 0:
            k += 1
        vle(k - j)
        for current in flat[j:k]:
            delta = current - previous
            vle(delta << 1 if delta >= 0 else ((-delta) << 1) - 1)  # zigzag
            previous = current
        i = k
    nibbles += [0] * (-len(nibbles) % 8)
    arr = np.asarray(nibbles, dtype=np.uint32).reshape(-1, 8)
    words = (arr << np.arange(28, -1, -4, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    return words.astype("<u4").tobytes()
