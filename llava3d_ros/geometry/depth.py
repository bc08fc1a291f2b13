"""Depth decoding (millimetre/TUM uint16 or metric float) and upstream's nearest resize + crop."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from llava3d_ros.geometry.cameras import ResizeCrop
from llava3d_ros.geometry.errors import GeometryError

MM_SCALE = 1000.0  # Kinect/RealSense/7-Scenes/ScanNet PNGs: millimetres
TUM_SCALE = 5000.0  # TUM RGB-D PNGs: 1/5000 m


def decode_depth(depth: np.ndarray, scale: float = MM_SCALE) -> np.ndarray:
    """Depth in metres (H, W) float32 with NaN where invalid.

    uint16 is divided by ``scale`` (0 and 65535 are invalid); float32/float64 are metres already
    (0, negatives, NaN and ±inf are invalid). The float32 division matches upstream's torch path.
    Every invalid pixel is NaN, so all masking consumers (robust patches, clicks, alignment) see
    a hole; a uint16 65535 is a NaN that carries ``scale`` in its payload (see
    :func:`saturated_nan_bits`), so that ``upstream`` mode can unproject it at 65535 / ``scale``
    like the released pipeline (:func:`upstream_depth`).
    """
    if not isinstance(depth, np.ndarray):
        raise GeometryError(f"depth must be a numpy array, got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.shape[0] < 1 or depth.shape[1] < 1:
        raise GeometryError(f"depth must be a 2-D image, got shape {depth.shape}")
    if depth.dtype == np.uint16:
        if not (np.isfinite(scale) and scale > 0):
            raise GeometryError(f"depth scale must be a positive number, got {scale}")
        metres = depth.astype(np.float32)
        np.divide(metres, np.float32(scale), out=metres)  # in place: no second image
        # 0 and 65535 in one comparison: uint16 wraps 0 − 1 to 65535
        np.copyto(metres, np.float32(np.nan), where=(depth - np.uint16(1)) >= np.uint16(65534))
        bits = saturated_nan_bits(scale)
        if bits is not None:
            metres.view(np.uint32)[depth == np.uint16(65535)] = bits
        return metres
    if depth.dtype in (np.float32, np.float64):
        metres = depth.astype(np.float32)
        with np.errstate(invalid="ignore"):
            metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
        return metres
    raise GeometryError(
        f"depth must be uint16 (scaled) or float32/float64 metres, got {depth.dtype}"
    )


# A decoded uint16 65535 is a positive quiet NaN whose 22-bit payload is the integer depth scale
# (bits 0x7FC00000 | scale): a hole to everything that masks NaN, and still "65535 at this scale"
# to upstream_depth. np.float32(np.nan) is 0x7FC00000 (payload 0), NaN from arithmetic has the
# sign bit set on x86, so neither is ever read as a marker. Non-integer scales (or ≥ 2²²) get a
# plain NaN: upstream mode then treats their 65535 like 0.
_QNAN = 0x7FC00000
_PAYLOAD = 0x003FFFFF
SATURATED_RAW = 65535


def saturated_nan_bits(scale: float) -> int | None:
    """The float32 bit pattern that marks a raw 65535 at ``scale`` (None: not encodable)."""
    s = float(scale)
    if not (s.is_integer() and 1 <= s <= _PAYLOAD):
        return None
    return _QNAN | int(s)


def upstream_depth(depth_m: np.ndarray) -> np.ndarray:
    """float32 depth as the released pipeline holds it: nothing masked, nothing NaN.

    Finite values are kept as they are (0 included: it unprojects to the camera centre). A
    decoded uint16 65535 (the NaN marker of :func:`decode_depth`) becomes 65535 / scale in
    float32, the value upstream divides out of the PNG (65.535 m at scale 1000). Any other NaN
    or ±inf — upstream reads uint16 PNGs, where they cannot occur — becomes 0, i.e. what a
    missing uint16 reading is: the patch sits at the camera centre.
    """
    d = np.asarray(depth_m, dtype=np.float32)
    out = np.array(d, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    if not bad.any():
        return out
    bits = d.view(np.uint32)  # same item size: a view for any strides
    payload = bits & np.uint32(_PAYLOAD)
    marker = bad & ((bits & np.uint32(~_PAYLOAD & 0xFFFFFFFF)) == np.uint32(_QNAN)) & (payload > 0)
    out[bad] = 0.0
    out[marker] = np.float32(SATURATED_RAW) / payload[marker].astype(np.float32)
    return out


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index per output index of Pillow's NEAREST resize, bit-exact.

    Nominally floor((i + 0.5) · in/out), but Pillow accumulates the sample position by repeated
    float64 addition of in/out, which lands just below integers that the closed form hits
    exactly (640→448 picks column 24, not 25, for output 17); a sequential cumsum reproduces it.
    """
    step = n_in / n_out
    steps = np.full(n_out, step)
    steps[0] = step * 0.5
    return np.cumsum(steps).astype(np.int64)


def resize_crop_nearest(image: np.ndarray, plan: ResizeCrop) -> np.ndarray:
    """Upstream's depth resize (Pillow NEAREST) + centre crop, as pure indexing (bit-exact)."""
    if image.shape[:2] != (plan.orig_h, plan.orig_w):
        raise GeometryError(
            f"image is {image.shape[1]}x{image.shape[0]}, plan expects {plan.orig_w}x{plan.orig_h}"
        )
    rows = nearest_indices(plan.orig_h, plan.new_h)[plan.top : plan.top + plan.size]
    cols = nearest_indices(plan.orig_w, plan.new_w)[plan.left : plan.left + plan.size]
    return image[rows[:, None], cols[None, :]]


RESAMPLE_MODES = ("pillow", "opencv")


def resize_crop_rgb(rgb: np.ndarray, plan: ResizeCrop, resample: str = "pillow") -> np.ndarray:
    """Colour as CLIP's processor sees it: shortest-side resize to ``size``, centre crop (floor).

    ``resample="pillow"`` is Pillow bicubic, bit-identical to HF's CLIPImageProcessor (the whole
    image is resized: resampling only the crop box with Pillow's ``box=`` differs by up to 20
    levels for portrait images, because Pillow ≥ 13 then runs the vertical pass first, see
    python-pillow/Pillow#9549; and for landscape its coefficients differ in the last bits, so
    neither shortcut is exact by construction). ``"opencv"`` is OpenCV bilinear, ~5× faster
    and not bit-exact (on the 7-Scenes frames mean |Δ| ≈ 0.4/255 against Pillow, the closest
    of OpenCV's fast modes; its bicubic is further off because it does not antialias).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise GeometryError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[:2] != (plan.orig_h, plan.orig_w):
        raise GeometryError(
            f"rgb is {rgb.shape[1]}x{rgb.shape[0]}, plan expects {plan.orig_w}x{plan.orig_h}"
        )
    if resample not in RESAMPLE_MODES:
        raise GeometryError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
    # HF's CLIPImageProcessor: long side int(size·long/short), crop offset floor((new−size)/2).
    short, long = sorted((plan.orig_w, plan.orig_h))
    new_long = int(plan.size * long / short)
    new_w, new_h = (new_long, plan.size) if plan.orig_w >= plan.orig_h else (plan.size, new_long)
    left, top = (new_w - plan.size) // 2, (new_h - plan.size) // 2
    if resample == "opencv":
        x0, y0 = left * plan.orig_w / new_w, top * plan.orig_h / new_h
        x1, y1 = x0 + plan.size * plan.orig_w / new_w, y0 + plan.size * plan.orig_h / new_h
        downscale = plan.orig_w >= new_w and plan.orig_h >= new_h  # no sample leaves the window
        if (
            downscale
            and all(float(c).is_integer() for c in (x0, y0, x1, y1))
            and (
                (x1 - x0) / plan.size == plan.orig_w / new_w
                and (y1 - y0) / plan.size == plan.orig_h / new_h
            )
        ):
            # the crop is whole source pixels at the same scale (640×480: columns 80..559), so
            # resizing just that window samples the same positions: identical, 25 % less work
            window = rgb[int(y0) : int(y1), int(x0) : int(x1)]
            return cv2.resize(window, (plan.size, plan.size), interpolation=cv2.INTER_LINEAR)
        out = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(out[top : top + plan.size, left : left + plan.size])
    img = Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BICUBIC)
    return np.asarray(img.crop((left, top, left + plan.size, top + plan.size)))
