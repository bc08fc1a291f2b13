"""Dataset readers: real 7-Scenes / TUM frames, synthetic TUM, ScanNet and rosbag2 fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from geometry.realdata import SEVEN, TUM, need, seven_frame
from PIL import Image

from llava3d_ros.geometry.unproject import optical_from_body_pose, pose_from_tum
from llava3d_ros.scene.readers import (
    DatasetError,
    MissingFileError,
    PoseFileError,
    RosbagReader,
    ScanNetReader,
    TumReader,
    UnknownLayoutError,
    detect_layout,
    open_dataset,
)
from scene import readers_fixtures as fx


def test_seven_scenes_real_frames() -> None:
    reader = open_dataset(need(SEVEN))
    assert detect_layout(SEVEN) == "7scenes" and len(reader) == 15
    np.testing.assert_array_equal(reader.intrinsics, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    frames = list(reader)
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps) and stamps[0] == 5_000_000_000  # frame 150 at 30 Hz
    rgb, raw, pose, _ = seven_frame(150)
    first = frames[0]
    np.testing.assert_array_equal(first.rgb, rgb)
    valid = (raw > 0) & (raw < 65535)
    np.testing.assert_allclose(first.depth[valid], raw[valid] / 1000.0, rtol=1e-6)
    assert np.isnan(first.depth[~valid]).all()
    np.testing.assert_allclose(first.cam_to_world, pose, atol=2e-4)  # re-orthonormalised only
    r = first.cam_to_world[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_tum_pair_real_frames() -> None:
    case = need(TUM) / "case_1"
    reader = open_dataset(case)
    assert reader.layout == "tum-pair" and len(reader) == 2
    np.testing.assert_array_equal(reader.intrinsics, np.loadtxt(TUM / "kinect_params.txt"))
    prev, curr = list(reader)
    assert prev.stamp_ns < curr.stamp_ns
    raw = np.asarray(Image.open(case / "dep_prev.png"))
    np.testing.assert_allclose(prev.depth[raw > 0], raw[raw > 0] / 5000.0, rtol=1e-6)
    assert 0.4 < float(np.nanmedian(prev.depth)) < 4.0
    expect = pose_from_tum(*np.loadtxt(case / "pose_prev.txt"))
    np.testing.assert_allclose(prev.cam_to_world, expect, atol=1e-12)


def test_tum_sequence_association_and_interpolation(tmp_path: Path) -> None:
    info = fx.write_tum(tmp_path / "seq")
    reader = open_dataset(tmp_path / "seq")
    assert isinstance(reader, TumReader)
    # depth frame 0 (t0) precedes the ground truth (t0 + 0.02 s): skipped, counted
    assert reader.skipped == 1 and len(reader) == 3
    frames = list(reader)
    for i, f in zip(range(1, 4), frames, strict=True):
        t = info["depth_t"][i]
        assert f.stamp_ns == int(f"{t:.6f}".replace(".", "")) * 1000  # the file's µs, exactly
        np.testing.assert_array_equal(f.rgb, fx.rgb_image(i))  # the colour 5 ms later
        raw = fx.depth_image(100 + i)
        np.testing.assert_allclose(f.depth[raw > 0], raw[raw > 0] / 5000.0, rtol=1e-6)
        assert np.isnan(f.depth[0, 0])
        # between 100 Hz samples the slerp/linear interpolation recovers the smooth motion
        np.testing.assert_allclose(f.cam_to_world, fx.pose_at(t - info["t0"]), atol=1e-5)
    np.testing.assert_array_equal(reader.intrinsics, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])


def test_tum_list_errors(tmp_path: Path) -> None:
    root = tmp_path / "seq"
    fx.write_tum(root)
    text = (root / "groundtruth.txt").read_text().splitlines()
    (root / "groundtruth.txt").write_text("\n".join([*text, "1305031103.5 1 2 3 0 0 0"]) + "\n")
    with pytest.raises(PoseFileError, match="expected 8 fields"):
        TumReader(root)
    (root / "groundtruth.txt").write_text("\n".join([*text, "1305031103.5 1 2 3 0 0 0 0"]) + "\n")
    with pytest.raises(PoseFileError, match="bad TUM pose"):  # zero quaternion
        TumReader(root)
    (root / "groundtruth.txt").unlink()
    with pytest.raises(MissingFileError, match="ground truth"):
        TumReader(root)
    fx.write_tum(root)
    (root / "rgb.txt").write_text("abc rgb/x.png\n")
    with pytest.raises(DatasetError, match="bad timestamp"):
        TumReader(root)
    fx.write_tum(root)
    next((root / "depth").glob("*.png")).unlink()
    with pytest.raises(MissingFileError, match="depth image"):
        TumReader(root)


def test_scannet_layout(tmp_path: Path) -> None:
    root = tmp_path / "scene0000_00"
    fx.write_scannet(root, n_frames=3, lost=(1,))
    reader = open_dataset(root)
    assert isinstance(reader, ScanNetReader)
    assert len(reader) == 2 and reader.skipped == 1
    np.testing.assert_allclose(reader.alignment, fx.SCANNET_ALIGN, atol=1e-12)
    np.testing.assert_array_equal(reader.depth_intrinsics, fx.K)
    np.testing.assert_array_equal(reader.intrinsics[:2], fx.K[:2] * 2)
    frames = list(reader)
    assert [f.stamp_ns for f in frames] == [0, round(2e9 / 30)]
    f = frames[1]
    assert f.rgb.shape == (96, 128, 3) and f.depth.shape == (48, 64)
    np.testing.assert_array_equal(f.k_depth, fx.K)
    raw = fx.depth_image(2)
    np.testing.assert_allclose(f.depth[raw > 0], raw[raw > 0] / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(f.cam_to_world, fx.pose_at(2 / 30), atol=1e-6)
    assert len(ScanNetReader(root, stride=2)) == 2  # frames 0 and 2


def test_scannet_errors(tmp_path: Path) -> None:
    root = tmp_path / "scene0001_00"
    fx.write_scannet(root, lost=())
    (root / "scene0001_00.txt").write_text("axisAlignment = 1 0 0\n")
    with pytest.raises(DatasetError, match="16 numbers"):
        ScanNetReader(root)
    (root / "scene0001_00.txt").unlink()
    assert ScanNetReader(root).alignment is None
    with pytest.raises(MissingFileError, match="axisAlignment"):
        ScanNetReader(root, require_alignment=True)
    np.savetxt(root / "pose" / "2.txt", np.eye(4)[:3])
    with pytest.raises(PoseFileError, match="4x4"):
        ScanNetReader(root)
    np.savetxt(root / "pose" / "2.txt", np.diag([1.0, 1.0, -1.0, 1.0]))  # a reflection
    with pytest.raises(PoseFileError, match="not a rotation"):
        ScanNetReader(root)
    np.savetxt(root / "pose" / "2.txt", np.eye(4))
    (root / "intrinsic" / "intrinsic_depth.txt").unlink()
    with pytest.raises(MissingFileError, match="intrinsics file"):
        ScanNetReader(root)


def test_seven_scenes_errors(tmp_path: Path) -> None:
    root = tmp_path / "seq-01"
    fx.write_seven_scenes(root, [0, 1, 2])
    assert [f.stamp_ns for f in open_dataset(root)] == [0, 33_333_333, 66_666_667]
    (root / "frame-000001.pose.txt").write_text("1 0 0 0\n0 1 0 0\nnan 0 1 0\n0 0 0 1\n")
    with pytest.raises(PoseFileError, match="non-finite"):
        open_dataset(root)
    (root / "frame-000001.pose.txt").write_text("identity\n")
    with pytest.raises(PoseFileError, match="not a numeric"):
        open_dataset(root)
    np.savetxt(root / "frame-000001.pose.txt", np.eye(4))
    (root / "frame-000002.depth.png").unlink()
    with pytest.raises(MissingFileError, match="frame-000002.depth.png"):
        open_dataset(root)
    (root / "frame-000002.pose.txt").unlink()
    (root / "frame-000001.color.png").write_bytes(b"not a png")
    frames = open_dataset(root)
    with pytest.raises(DatasetError, match="cannot decode"):
        list(frames)


def test_unknown_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError):
        open_dataset(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnknownLayoutError, match="no known layout"):
        open_dataset(tmp_path)
    with pytest.raises(UnknownLayoutError, match="unknown layout"):
        open_dataset(tmp_path, layout="kitti")


def test_rosbag2_reader(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    stamps = fx.write_bag(bag, n_frames=3)
    reader = open_dataset(bag)
    assert isinstance(reader, RosbagReader)
    assert reader.color_topic == "/camera/color/image_raw"
    assert reader.depth_topic == "/camera/depth/image_rect_raw"
    np.testing.assert_allclose(reader.intrinsics, fx.K)
    frames = list(reader)
    assert [f.stamp_ns for f in frames] == stamps
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(f.rgb, fx.rgb_image(i))
        raw = fx.depth_image(100 + i)
        np.testing.assert_allclose(f.depth[raw > 0], raw[raw > 0] / 1000.0, rtol=1e-6)
        np.testing.assert_allclose(f.cam_to_world, fx.pose_at(stamps[i] / 1e9), atol=1e-6)
    body = list(RosbagReader(bag, pose_frame="body"))
    np.testing.assert_allclose(
        body[0].cam_to_world, optical_from_body_pose(fx.pose_at(stamps[0] / 1e9)), atol=1e-6
    )


def test_rosbag2_float_depth_and_topics(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    fx.write_bag(bag, n_frames=2, depth_encoding="32FC1", extra_image_topic=True)
    with pytest.raises(DatasetError, match="cannot choose the colour topic"):
        RosbagReader(bag)
    with pytest.raises(DatasetError, match="not a sensor_msgs/msg/Image topic"):
        RosbagReader(bag, color_topic="/camera/pose")
    reader = RosbagReader(bag, color_topic="/camera/color/image_raw")
    f = next(iter(reader))
    raw = fx.depth_image(100)
    np.testing.assert_allclose(f.depth[raw > 0], raw[raw > 0] / 1000.0, rtol=1e-6)
    assert np.isnan(f.depth[0, 0])


def test_rosbag2_bad_depth_encoding(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    fx.write_bag(bag, n_frames=1, depth_encoding="mono8")
    with pytest.raises(DatasetError, match="depth encoding 'mono8'"):
        list(RosbagReader(bag))


def test_tum_pair_intrinsics_file_then_default(tmp_path: Path) -> None:
    dst = tmp_path / "case"
    shutil.copytree(need(TUM) / "case_2", dst)  # a tmp copy, so a K file can be added
    k = np.array([[500.0, 0, 300], [0, 510.0, 200], [0, 0, 1]])
    np.savetxt(dst / "kinect_params.txt", k)
    np.testing.assert_array_equal(open_dataset(dst).intrinsics, k)
    (dst / "kinect_params.txt").unlink()
    reader = open_dataset(dst)
    np.testing.assert_array_equal(reader.intrinsics, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    assert len(list(reader)) == 2


def test_folder_of_sequences_is_refused_listing_them(tmp_path: Path) -> None:
    for name in ("case_10", "case_2", "case_1"):
        fx.write_seven_scenes(tmp_path / name, [0, 1])
    (tmp_path / "notes").mkdir()  # not a sequence: left out
    (tmp_path / "notes" / "a.txt").write_text("hello")
    broken = tmp_path / "broken"  # matches 7-Scenes but a depth image is missing: left out
    fx.write_seven_scenes(broken, [0])
    (broken / "frame-000000.depth.png").unlink()
    with pytest.raises(UnknownLayoutError) as err:
        open_dataset(tmp_path)
    msg = str(err.value)
    assert "no known layout" in msg
    assert "it holds sequences: case_1, case_2, case_10 — replay one of them" in msg
    assert "broken" not in msg and "notes" not in msg


def test_real_tum_folder_lists_its_cases() -> None:
    with pytest.raises(UnknownLayoutError, match="it holds sequences: case_1, case_2 — replay"):
        open_dataset(need(TUM))
