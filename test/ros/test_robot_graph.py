"""A robot's ROS graph over real DDS: poses only through TF, clicks on any image, SLAM corrections.

The TF tree is a robot's: ``map → odom`` (a few Hz, with a relocalisation jump), ``odom →
base_link`` at every frame, ``base_link → camera_link → camera_color_optical_frame`` static
on ``/tf_static``. Images come in the optical frame and no PoseStamped is sent at all. The
frames are real 7-Scenes ones (their poses are ``map ← optical``); the model is the tiny
random-weight one, so geometry is what is checked.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.qos import QoSProfile, ReliabilityPolicy
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray

from llava3d_ros.msg import Answer, Click, Prompt
from llava3d_ros.ros.client import Llava3dClient
from llava3d_ros.ros.convert import cloud_to_points, matrix_to_pose, ns_to_stamp
from llava3d_ros.ros.publish import FramePublisher, TfPublisher

from .conftest import Diagnostics, harness, seven_scenes_frames
from .test_replay_click import LATCHED, Inbox, _smooth_pixel

pytestmark = [pytest.mark.ros, pytest.mark.slow]

OPTICAL = "camera_color_optical_frame"
# every frame sent arrives (reliable) and is kept: which frames are keyframes is known
EVERY_FRAME_A_KEYFRAME = (
    "world_frame:=map",
    "sensor_qos:=reliable",
    "ingest_rate_hz:=0.0",
    "keyframe_min_translation_m:=0.0",
    "keyframe_min_rotation_deg:=0.0",
    "max_new_tokens:=4",
)
HELD_OUT = 10  # this frame's images are never sent: only its pose exists (through TF)


def _rigid(xyz: tuple[float, float, float], euler_deg: tuple[float, float, float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", euler_deg, degrees=True).as_matrix()
    m[:3, 3] = xyz
    return m


# camera_link in base_link (a mast camera) and the optical frame in camera_link (REP 103)
BASE_T_LINK = _rigid((0.1, 0.0, 0.5), (0.0, 10.0, 0.0))
LINK_T_OPTICAL = _rigid((0.0, 0.015, 0.0), (-90.0, 0.0, -90.0))
BASE_T_OPTICAL = BASE_T_LINK @ LINK_T_OPTICAL
MAP_T_ODOM = (_rigid((0.3, -0.2, 0.0), (0.0, 0.0, 5.0)), _rigid((0.5, 0.1, 0.0), (0.0, 0.0, 9.0)))


def _stamp(f: dict) -> int:
    return round(f["index"] * 1e9 / 30)


def _map_t_odom(t_ns: int, jump_ns: int) -> np.ndarray:
    return MAP_T_ODOM[t_ns >= jump_ns]


def _prompt(*clicks: Click) -> Prompt:
    return Prompt(question="what is this?", clicks=list(clicks), max_new_tokens=4)


def _pixel(u: float, v: float, stamp_ns: int, frame_id: str = "") -> Click:
    return Click(kind=Click.PIXEL, u=u, v=v, stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def _point(xyz: np.ndarray, frame_id: str, stamp_ns: int) -> Click:
    c = Click(kind=Click.POINT)
    c.point.header = Header(frame_id=frame_id, stamp=ns_to_stamp(stamp_ns))
    c.point.point.x, c.point.point.y, c.point.point.z = (float(x) for x in xyz)
    return c


def _truth(f: dict, u: float, v: float) -> np.ndarray:
    d = f["depth"][int(round(v)), int(round(u))] / 1000.0
    k = f["k"]
    cam = np.array([(u - k[0, 2]) * d / k[0, 0], (v - k[1, 2]) * d / k[1, 1], d, 1.0])
    return (f["pose"] @ cam)[:3]


def _xyz(p) -> np.ndarray:  # noqa: ANN001 - geometry_msgs/Point
    return np.array([p.x, p.y, p.z])


def test_tf_posed_robot_clicks_and_slam_corrections(node_factory, ros_context, request):
    import rclpy

    h = harness(request.config)
    frames = seven_scenes_frames()
    node = node_factory(*EVERY_FRAME_A_KEYFRAME, name="llava3d")
    client = Llava3dClient("/llava3d", ros_context)
    pub_node = rclpy.create_node("robot", context=ros_context)
    cam = FramePublisher(pub_node, camera_frame=OPTICAL)
    tf = TfPublisher(pub_node)
    path_pub = pub_node.create_publisher(
        Path,
        "/keyframe_corrections",
        QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
    )
    diag = Diagnostics(pub_node)
    clouds, detections = Inbox(), Inbox()
    pub_node.create_subscription(PointCloud2, "/llava3d/scene_points", clouds, LATCHED)
    pub_node.create_subscription(Detection3DArray, "/llava3d/detections", detections, 10)
    client._executor.add_node(pub_node)
    try:
        client.wait_for_node(60)
        h.wait_for(lambda: cam.rgb.get_subscription_count() > 0, 30, "the node's rgb/image")
        tf.static("base_link", "camera_link", BASE_T_LINK)
        tf.static("camera_link", OPTICAL, LINK_T_OPTICAL)
        stamps = [_stamp(f) for f in frames]
        jump = stamps[len(stamps) // 2]  # map → odom relocalises half-way
        odom_stamps = list(range(stamps[0] - 200_000_000, stamps[-1] + 400_000_000, 200_000_000))
        odom_stamps += [jump - 1, jump]
        sent_odom: set[int] = set()
        for i, (f, t) in enumerate(zip(frames, stamps, strict=True)):
            ahead = sorted(s for s in odom_stamps if s <= t + 250_000_000 and s not in sent_odom)
            sent_odom.update(ahead)
            tf.send([("map", "odom", _map_t_odom(s, jump), s) for s in ahead])
            odom_t_base = (
                np.linalg.inv(_map_t_odom(t, jump)) @ f["pose"] @ np.linalg.inv(BASE_T_OPTICAL)
            )
            tf.send([("odom", "base_link", odom_t_base, t)])
            if i != HELD_OUT:
                cam.publish(f["rgb"], f["depth"], f["k"], None, t)  # no PoseStamped at all
            time.sleep(0.1)
        kept = len(frames) - 1
        h.wait_for(lambda: int(diag.get("frames_synced")) >= kept, 30, f"{kept} frames synced")
        assert diag.get("tf.backend") == "own" and diag.get("cameras") == "1"
        assert diag.get("camera_frame..") == OPTICAL

        # a pixel click on the frame whose images never came: rendered from the keyframes
        held = frames[HELD_OUT]
        u, v = _smooth_pixel(held["depth"])
        answer = client.query(_prompt(_pixel(u, v, stamps[HELD_OUT])), timeout=60)
        assert answer.code == Answer.OK, answer.message
        miss = np.linalg.norm(_xyz(answer.click_points[0]) - _truth(held, u, v))
        print(
            f"\nPIXEL click on a never-seen frame (pose via TF): {miss * 100:.2f} cm from its surface"
        )
        assert miss < 0.03
        assert set(answer.view_frames) == {OPTICAL}
        assert len(answer.view_frames) == len(answer.view_stamps)

        # a POINT click given in base_link, at a stamp after the map → odom jump
        j = len(frames) - 2
        p_base = np.array([1.2, -0.1, 0.3])
        want = (frames[j]["pose"] @ np.linalg.inv(BASE_T_OPTICAL) @ np.append(p_base, 1.0))[:3]
        answer = client.query(_prompt(_point(p_base, "base_link", stamps[j])), timeout=60)
        assert answer.code == Answer.OK, answer.message
        miss = np.linalg.norm(_xyz(answer.click_points[0]) - want)
        print(f"POINT click in base_link: {miss * 1000:.3f} mm from its map point")
        assert miss < 0.01
        bad = client.query(_prompt(_point(p_base, "no_such_frame", 0)), timeout=60)
        assert bad.code == Answer.BAD_REQUEST and "no_such_frame" in bad.message

        # grounding boxes also go out as vision_msgs
        grounded = client.query(
            Prompt(question="the kettle", task="ground", max_new_tokens=24), timeout=60
        )
        assert grounded.code == Answer.OK, grounded.message
        h.wait_for(lambda: detections.last() is not None, 10, "~/detections")
        det = detections.last()
        assert det.header.frame_id == "map" and len(det.detections) == len(grounded.objects)

        # SLAM: the older half of the trajectory is corrected by 0.3 m; keyframes follow
        first = frames[0]
        u0, v0 = _smooth_pixel(first["depth"])
        before = client.query(_prompt(_pixel(u0, v0, stamps[0], OPTICAL)), timeout=60)
        assert before.code == Answer.OK, before.message
        h.wait_for(lambda: clouds.last() is not None, 10, "~/scene_points")
        n_clouds = len(clouds.msgs)
        cloud_before = cloud_to_points(clouds.last())[0]
        path = Path(header=Header(frame_id="map"))
        shift = np.array([0.0, 0.3, 0.0])
        for f, t in zip(frames, stamps, strict=True):
            pose = f["pose"].copy()
            if t < jump:
                pose[:3, 3] += shift
            header = Header(frame_id="map", stamp=ns_to_stamp(t))
            path.poses.append(PoseStamped(header=header, pose=matrix_to_pose(pose)))
        path_pub.publish(path)
        h.wait_for(lambda: int(diag.get("corrections.moved")) > 0, 20, "keyframes re-posed")
        after = client.query(_prompt(_pixel(u0, v0, stamps[0], OPTICAL)), timeout=60)
        moved = _xyz(after.click_points[0]) - _xyz(before.click_points[0])
        np.testing.assert_allclose(moved, shift, atol=1e-3)
        h.wait_for(lambda: len(clouds.msgs) > n_clouds, 10, "a new ~/scene_points")
        cloud_after = cloud_to_points(clouds.last())[0]
        d_shifted, _ = cKDTree(cloud_before + shift).query(cloud_after)
        d_same, _ = cKDTree(cloud_before).query(cloud_after)
        moved_frac = float(np.mean((d_shifted < 0.01) & (d_same > 0.05)))
        print(
            f"scene cloud: {moved_frac:.0%} of points moved with the correction; {diag.get('corrections.last')}"
        )
        assert 0.2 < moved_frac < 0.8
    finally:
        client._executor.remove_node(pub_node)
        pub_node.destroy_node()
        client.close()
        node.stop()  # the next test starts a node of the same name


def test_two_cameras_one_scene(node_factory, ros_context, request):
    """Two cameras (own namespaces, own pose topics) on the two halves of a real sequence."""
    import rclpy

    h = harness(request.config)
    frames = seven_scenes_frames()
    node = node_factory(
        *EVERY_FRAME_A_KEYFRAME, "cameras:=[front, rear]", "num_views:=16", name="llava3d"
    )
    client = Llava3dClient("/llava3d", ros_context)
    pub_node = rclpy.create_node("rig", context=ros_context)
    front = FramePublisher(pub_node, "front", "map", "front_optical")
    rear = FramePublisher(pub_node, "rear", "map", "rear_optical")
    diag = Diagnostics(pub_node)
    client._executor.add_node(pub_node)
    try:
        client.wait_for_node(60)
        h.wait_for(
            lambda: rear.wait_for_subscribers(0.1) and front.wait_for_subscribers(0.1),
            30,
            "subscribers",
        )
        half = len(frames) // 2
        # both cameras at once: the rear one sees the second half of the sequence, stamped
        # at the same times as the front one (a rig's cameras share a clock)
        for i in range(half):
            f, r = frames[i], frames[half + i]
            t = _stamp(f)
            front.publish(f["rgb"], f["depth"], f["k"], f["pose"], t)
            rear.publish(r["rgb"], r["depth"], r["k"], r["pose"], t)
            time.sleep(0.1)
        h.wait_for(lambda: int(diag.get("frames_synced")) >= 2 * half, 30, "both cameras' frames")
        assert diag.get("cameras") == "2"
        assert diag.get("camera_frame.front") == "front_optical"
        assert float(diag.get("rate_hz.rear/rgb/image")) > 0
        answer = client.query(Prompt(question="what is here?", max_new_tokens=4), timeout=60)
        assert answer.code == Answer.OK, answer.message
        assert {"front_optical", "rear_optical"} <= set(answer.view_frames)
        # the same stamp names an image of each camera: the frame_id says which
        t = _stamp(frames[2])
        for frame_id, f in (("front_optical", frames[2]), ("rear_optical", frames[half + 2])):
            u, v = _smooth_pixel(f["depth"])
            got = client.query(_prompt(_pixel(u, v, t, frame_id)), timeout=60)
            assert got.code == Answer.OK, got.message
            miss = np.linalg.norm(_xyz(got.click_points[0]) - _truth(f, u, v))
            print(f"\n{frame_id} click: {miss * 100:.2f} cm from its surface")
            assert miss < 0.03
        ambiguous = client.query(_prompt(_pixel(300.0, 200.0, t)), timeout=60)
        assert ambiguous.code == Answer.BAD_REQUEST and "frame_id" in ambiguous.message
    finally:
        client._executor.remove_node(pub_node)
        pub_node.destroy_node()
        client.close()
        node.stop()


def test_compressed_images_through_a_distorting_lens(node_factory, ros_context, request):
    """JPEG colour and compressedDepth PNG from a plumb_bob lens (k1 −0.28): corner clicks land."""
    import rclpy
    from geometry.test_compressed import publish_color, publish_depth
    from geometry.test_distortion import PLUMB_BOB, _corner_clicks, _warped_frame
    from sensor_msgs.msg import CompressedImage

    from llava3d_ros.ros.publish import SENSOR_PUB_QOS, camera_info

    h = harness(request.config)
    frames = seven_scenes_frames(1)  # frame 150, which _warped_frame warps
    _, depth, rgb_d, depth_d, k = _warped_frame()
    node = node_factory(
        *EVERY_FRAME_A_KEYFRAME,
        "rgb_transport:=compressed",
        "depth_transport:=compressedDepth",
        name="llava3d",
    )
    client = Llava3dClient("/llava3d", ros_context)
    pub_node = rclpy.create_node("lens", context=ros_context)
    rgb_pub = pub_node.create_publisher(CompressedImage, "rgb/image/compressed", SENSOR_PUB_QOS)
    depth_pub = pub_node.create_publisher(
        CompressedImage, "depth/image/compressedDepth", SENSOR_PUB_QOS
    )
    cam = FramePublisher(pub_node, camera_frame=OPTICAL)  # camera_info and pose
    client._executor.add_node(pub_node)
    try:
        client.wait_for_node(60)
        h.wait_for(lambda: depth_pub.get_subscription_count() > 0, 30, "compressedDepth sub")
        t = _stamp(frames[0])
        pose = PoseStamped(header=Header(frame_id="map", stamp=ns_to_stamp(t)))
        pose.pose = matrix_to_pose(frames[0]["pose"])
        info = camera_info(k, 640, 480, t, OPTICAL)
        info.d = list(PLUMB_BOB)
        header = Header(frame_id=OPTICAL, stamp=ns_to_stamp(t))
        fmt, data = publish_color(rgb_d, "rgb8", "jpeg")
        color = CompressedImage(header=header, format=fmt, data=data)
        fmt, data = publish_depth(depth_d, "png")
        depth_msg = CompressedImage(header=header, format=fmt, data=data)
        cam.pose.publish(pose)
        cam.info.publish(info)
        depth_pub.publish(depth_msg)
        rgb_pub.publish(color)
        misses = []
        for distorted_uv, _, truth_cam, _ in _corner_clicks(depth, k, per_corner=2):
            u, v = (float(x) for x in distorted_uv)
            answer = client.query(_prompt(_pixel(u, v, t)), timeout=60)
            if answer.code == Answer.NO_SCENE:  # the one frame is still on its way
                h.wait_for(
                    lambda: client.query(_prompt(), timeout=60).code == Answer.OK, 30, "the frame"
                )
                answer = client.query(_prompt(_pixel(u, v, t)), timeout=60)
            assert answer.code == Answer.OK, answer.message
            truth = (frames[0]["pose"] @ np.append(truth_cam, 1.0))[:3]
            misses.append(np.linalg.norm(_xyz(answer.click_points[0]) - truth))
        print(
            f"\ncorner clicks through the lens (compressed inputs): mean "
            f"{np.mean(misses) * 100:.2f} cm, max {np.max(misses) * 100:.2f} cm"
        )
        assert np.max(misses) < 0.03
        # a corrupt JPEG is an input error in /diagnostics, never a crash
        diag = Diagnostics(pub_node)
        t2 = t + 100_000_000
        pose.header.stamp = ns_to_stamp(t2)
        pose.pose.position.x += 0.5
        info.header.stamp = ns_to_stamp(t2)
        header = Header(frame_id=OPTICAL, stamp=ns_to_stamp(t2))
        cam.pose.publish(pose)
        cam.info.publish(info)
        depth_pub.publish(
            CompressedImage(header=header, format=depth_msg.format, data=depth_msg.data)
        )
        rgb_pub.publish(
            CompressedImage(
                header=header, format="rgb8; jpeg compressed bgr8", data=b"\xff\xd8garbage"
            )
        )
        h.wait_for(
            lambda: "JPEG" in diag.get("last_error.rgb/image", "").upper(), 20, "the decode error"
        )
        assert client.query(_prompt(), timeout=60).code == Answer.OK
        assert node.alive()
    finally:
        client._executor.remove_node(pub_node)
        pub_node.destroy_node()
        client.close()
        node.stop()


def test_depth_from_its_own_camera_is_registered_over_tf(node_factory, ros_context, request):
    """Depth with its own camera_info and frame, 2.5 cm from colour (TF static): clicks land."""
    import rclpy
    from geometry.test_registration import K_COLOR, K_DEPTH, SIZE, render

    from llava3d_ros.ros.convert import array_to_image
    from llava3d_ros.ros.publish import camera_info

    h = harness(request.config)
    node = node_factory(*EVERY_FRAME_A_KEYFRAME, "use_depth_camera_info:=true", name="llava3d")
    client = Llava3dClient("/llava3d", ros_context)
    pub_node = rclpy.create_node("unaligned", context=ros_context)
    cam = FramePublisher(pub_node, camera_frame="color_optical")
    depth_info = pub_node.create_publisher(
        type(camera_info(K_DEPTH, *SIZE, 0, "")), "depth/camera_info", 10
    )
    tf = TfPublisher(pub_node)
    client._executor.add_node(pub_node)
    try:
        client.wait_for_node(60)
        h.wait_for(lambda: cam.wait_for_subscribers(0.1), 30, "the node's subscriptions")
        color_t_depth = _rigid((-0.025, 0.0, 0.0), (0.0, 0.0, 0.0))
        tf.static("color_optical", "depth_optical", color_t_depth)
        depth_m = render(K_DEPTH, SIZE, color_t_depth)  # the depth camera's own view
        reference = render(K_COLOR, SIZE, np.eye(4))  # the colour camera's view
        t = 1_000_000_000
        rgb = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
        pose = PoseStamped(header=Header(frame_id="map", stamp=ns_to_stamp(t)))
        pose.pose = matrix_to_pose(np.eye(4))
        cam.pose.publish(pose)
        cam.info.publish(camera_info(K_COLOR, *SIZE, t, "color_optical"))
        depth_info.publish(camera_info(K_DEPTH, *SIZE, t, "depth_optical"))
        mm = np.nan_to_num(depth_m * 1000.0).astype(np.uint16)
        cam.depth.publish(array_to_image(mm, "16UC1", t, "depth_optical"))
        cam.rgb.publish(array_to_image(rgb, "rgb8", t, "color_optical"))
        h.wait_for(lambda: client.query(_prompt(), timeout=60).code == Answer.OK, 30, "the frame")
        misses = []
        # just inside the box's left edge (u 196 in colour, 205 in depth) and on the box's
        # middle: taken as registered, the first two would read the wall 1 m behind
        for u, v in ((201.0, 240.0), (203.0, 200.0), (300.0, 240.0), (420.0, 280.0)):
            answer = client.query(_prompt(_pixel(u, v, t)), timeout=60)
            assert answer.code == Answer.OK, answer.message
            d = reference[int(v), int(u)]
            truth = np.array([(u - K_COLOR[0, 2]) * d / 500.0, (v - K_COLOR[1, 2]) * d / 500.0, d])
            misses.append(np.linalg.norm(_xyz(answer.click_points[0]) - truth))
        print(f"\nclicks on registered depth (2.5 cm baseline): max {max(misses) * 100:.2f} cm")
        assert max(misses) < 0.01
    finally:
        client._executor.remove_node(pub_node)
        pub_node.destroy_node()
        client.close()
        node.stop()
