"""Message ↔ array conversion: encodings, step padding, endianness, and clear errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nav_msgs.msg import Odometry
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image

from llava3d_ros.answer import AnswerResult, Box3D, ResultCode, Timings
from llava3d_ros.msg import Answer, Click, Prompt
from llava3d_ros.query.request import PixelClick, PointClick, QueryRequest
from llava3d_ros.ros import convert
from llava3d_ros.ros.convert import ConversionError


def _image(arr: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image with ``pad`` bytes of row padding, in the requested byte order."""
    a = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.reshape(a.shape[0], -1).view(np.uint8)
    padded = np.zeros((rows.shape[0], rows.shape[1] + pad), dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding)
    msg.is_bigendian = bigendian
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_give_rgb(pad):
    np.testing.assert_array_equal(convert.color_from_image(_image(RGB, "rgb8", pad)), RGB)
    np.testing.assert_array_equal(
        convert.color_from_image(_image(RGB[:, :, ::-1], "bgr8", pad)), RGB
    )
    rgba = np.concatenate([RGB, np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(convert.color_from_image(_image(rgba, "rgba8", pad)), RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(convert.color_from_image(_image(bgra, "bgra8", pad)), RGB)
    mono = RGB[:, :, 0]
    out = convert.color_from_image(_image(mono, "mono8", pad))
    assert out.shape == (4, 5, 3) and (out == mono[:, :, None]).all()


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 2])
def test_depth_16uc1_is_millimetres_with_holes(bigendian, pad):
    mm = np.array([[0, 1000, 65535], [1500, 2, 40000]], dtype=np.uint16)
    m = convert.depth_from_image(_image(mm, "16UC1", pad, bigendian))
    assert m.dtype == np.float32
    assert np.isnan(m[0, 0]) and np.isnan(m[0, 2])
    np.testing.assert_allclose(m[[0, 1, 1, 1], [1, 0, 1, 2]], [1.0, 1.5, 0.002, 40.0], rtol=1e-6)


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_32fc1_is_metres_with_invalid_values(bigendian):
    f = np.array([[1.25, np.nan, 0.0], [-1.0, np.inf, 3.5]], dtype=np.float32)
    m = convert.depth_from_image(_image(f, "32FC1", 4, bigendian))
    assert m[0, 0] == np.float32(1.25) and m[1, 2] == np.float32(3.5)
    assert np.isnan(m[[0, 0, 1, 1], [1, 2, 0, 1]]).all()


def test_wrong_encoding_is_rejected():
    with pytest.raises(ConversionError, match="yuv422"):
        convert.color_from_image(_image(RGB[:, :, :2].copy(), "yuv422"))
    with pytest.raises(ConversionError, match="depth image encoding 'rgb8'"):
        convert.depth_from_image(_image(RGB, "rgb8"))
    with pytest.raises(ConversionError, match="colour image encoding '16UC1'"):
        convert.color_from_image(_image(RGB[:, :, 0].astype(np.uint16), "16UC1"))


def test_step_and_size_mismatches_are_rejected():
    msg = _image(RGB, "rgb8")
    msg.step = 14  # < 5 px * 3 bytes
    with pytest.raises(ConversionError, match="step 14 is smaller"):
        convert.color_from_image(msg)
    msg = _image(RGB, "rgb8")
    msg.data = bytes(len(msg.data) - 1)
    with pytest.raises(ConversionError, match="data holds 59 bytes"):
        convert.color_from_image(msg)
    msg = _image(RGB, "rgb8")
    msg.height = 0
    with pytest.raises(ConversionError, match="empty or implausible"):
        convert.color_from_image(msg)
    msg = _image(np.zeros((2, 3), np.uint16), "16UC1")
    msg.step = 7
    with pytest.raises(ConversionError, match="step 7 is not a multiple"):
        convert.depth_from_image(msg)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    enc=st.sampled_from(["rgb8", "bgra8", "mono8", "16UC1", "32FC1"]),
    seed=st.integers(0, 2**16),
)
def test_array_to_image_round_trip(h, w, enc, seed):
    rng = np.random.default_rng(seed)
    dtype, ch = {
        "rgb8": (np.uint8, 3),
        "bgra8": (np.uint8, 4),
        "mono8": (np.uint8, 1),
        "16UC1": (np.uint16, 1),
        "32FC1": (np.float32, 1),
    }[enc]
    shape = (h, w) if ch == 1 else (h, w, ch)
    arr = (rng.random(shape) * 60000).astype(dtype)
    msg = convert.array_to_image(arr, enc, 123, "cam")
    np.testing.assert_array_equal(convert.image_to_array(msg), arr)
    assert msg.header.frame_id == "cam" and convert.stamp_to_ns(msg.header.stamp) == 123


def test_array_to_image_rejects_wrong_layout():
    with pytest.raises(ConversionError, match="rgb8 needs"):
        convert.array_to_image(np.zeros((2, 2), np.uint8), "rgb8")


def test_camera_info():
    info = CameraInfo(width=640, height=480)
    info.k = [585.0, 0, 320, 0, 585, 240, 0, 0, 1]
    cam = convert.camera_from_info(info)
    assert (cam.width, cam.height) == (640, 480) and cam.k[0, 0] == 585 and not cam.distorted
    with pytest.raises(ConversionError, match="not calibrated"):
        convert.camera_from_info(CameraInfo(width=640, height=480))
    info.k = [585.0, 0, 320, 0, -5, 240, 0, 0, 1]
    with pytest.raises(ConversionError, match="focal"):
        convert.camera_from_info(info)


def test_pose_conversions_round_trip():
    rot = Rotation.from_euler("xyz", [0.3, -0.2, 1.1])
    mat = np.eye(4)
    mat[:3, :3], mat[:3, 3] = rot.as_matrix(), [1.0, -2.0, 0.5]
    pose = convert.matrix_to_pose(mat)
    np.testing.assert_allclose(convert.pose_to_matrix(pose), mat, atol=1e-12)
    odom = Odometry()
    odom.header.frame_id, odom.header.stamp.sec = "odom", 3
    odom.pose.pose = pose
    stamp, frame, m2 = convert.odometry_to_matrix(odom)
    assert (stamp, frame) == (3_000_000_000, "odom")
    np.testing.assert_allclose(m2, mat, atol=1e-12)
    pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = 0, 0, 0, 0
    with pytest.raises(ConversionError, match="not a rotation"):
        convert.pose_to_matrix(pose)
    pose.orientation.w, pose.position.x = 1.0, math.nan
    with pytest.raises(ConversionError, match="non-finite"):
        convert.pose_to_matrix(pose)


def test_stamps():
    assert convert.stamp_to_ns(convert.ns_to_stamp(12_345_678_901)) == 12_345_678_901
    with pytest.raises(ConversionError):
        convert.ns_to_stamp(-1)


def test_prompt_round_trip_and_unknown_click_kind():
    req = QueryRequest(
        "what is this?",
        "qa",
        (PixelClick(10.5, 20.0, 7), PointClick(np.array([1.0, 2.0, 3.0]), "map")),
        16,
        0.5,
        4,
    )
    back = convert.prompt_from_msg(convert.prompt_to_msg(req))
    assert back.question == req.question and back.task == "qa" and back.max_views == 4
    assert back.clicks[0] == req.clicks[0]
    np.testing.assert_array_equal(back.clicks[1].xyz, [1, 2, 3])
    bad = Prompt(question="x")
    bad.clicks.append(Click(kind=9))
    with pytest.raises(ConversionError, match="unknown kind 9"):
        convert.prompt_from_msg(bad)


def test_answer_message_fields():
    box = Box3D(
        np.array([1.0, 2.0, 0.5]),
        np.array([0.4, 0.6, 1.0]),
        np.array([math.pi / 2, 0, 0]),
        "chair",
        0.8,
    )
    res = AnswerResult(
        code=ResultCode.OK,
        text="a chair [1,2,0.5]",
        boxes=[box],
        click_points=[np.array([0.1, 0.2, 0.3])],
        view_stamps_ns=[5, 9_000_000_001],
        model="m (random-weights)",
        scene_tokens=77,
        timings=Timings(0.1, 0.2, 0.3, 0.7),
        parse_warnings=["w"],
    )
    msg = convert.answer_to_msg(res, QueryRequest("q"), "map")
    assert isinstance(msg, Answer) and msg.success and msg.code == Answer.OK
    assert convert.stamp_to_ns(msg.header.stamp) == 9_000_000_001 and msg.header.frame_id == "map"
    o = msg.objects[0]
    assert o.label == "chair" and o.score == pytest.approx(0.8)
    q = [
        o.center.orientation.x,
        o.center.orientation.y,
        o.center.orientation.z,
        o.center.orientation.w,
    ]
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix() @ [1, 0, 0], [0, 1, 0], atol=1e-9)
    assert (o.size.x, o.size.y, o.size.z) == pytest.approx((0.4, 0.6, 1.0))
    assert msg.click_points[0].z == pytest.approx(0.3)
    assert [convert.stamp_to_ns(s) for s in msg.view_stamps] == [5, 9_000_000_001]
    assert msg.total_s == pytest.approx(0.7) and list(msg.warnings) == ["w"]
    failed = convert.answer_to_msg(AnswerResult(ResultCode.BUSY, "full"), QueryRequest("q"), "map")
    assert not failed.success and failed.code == Answer.BUSY and failed.message == "full"
    summary = convert.answer_summary(msg)
    assert (
        summary["objects"][0]["label"] == "chair" and summary["view_stamps_ns"][1] == 9_000_000_001
    )


def test_point_cloud_packing():
    xyz = np.array([[0, 1, 2], [3.5, -4, 5]], dtype=np.float32)
    rgb = np.array([[255, 0, 10], [1, 2, 3]], dtype=np.uint8)
    msg = convert.cloud_from_points(xyz, rgb, 42, "map")
    assert msg.width == 2 and msg.point_step == 16 and msg.row_step == 32 and len(msg.data) == 32
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    raw = np.frombuffer(bytes(msg.data), dtype="<u4").reshape(2, 4)
    assert raw[0, 3] == (255 << 16) | 10
    xyz2, rgb2 = convert.cloud_to_points(msg)
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)
    with pytest.raises(ConversionError, match="3 colours for 2 points"):
        convert.cloud_from_points(xyz, np.zeros((3, 3), np.uint8), 0, "map")
