"""Launch the llava3d lifecycle node on a full ROS 2 install (needs launch_ros; not runnable here).

Arguments mirror the node's main parameters; each one, when given, overrides the preset YAML.
`autostart:=true` lets launch_ros configure and activate the node (no lifecycle manager needed).
Example:
  ros2 launch llava3d_ros llava3d.launch.py namespace:=robot1 params_file:=<share>/config/jetson_orin.yaml \
      rgb_topic:=/camera/color/image_raw depth_topic:=/camera/aligned_depth_to_color/image_raw \
      rgb_info_topic:=/camera/color/camera_info pose_topic:=/slam/camera_pose
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription

# launch argument -> (node parameter, type, description); every one maps to a declared parameter
PARAM_ARGS = {
    "model_path": ("model_path", str, "LLaVA-3D checkpoint directory; empty = embedded tiny model"),
    "vision_tower_path": (
        "vision_tower_path",
        str,
        "CLIP tower directory; empty = <model_path>/vision_tower",
    ),
    "device": ("device", str, "auto, cpu, cuda or cuda:N"),
    "dtype": ("dtype", str, "auto, fp32, fp16 or bf16"),
    "world_frame": ("world_frame", str, "fixed frame of poses, answers and markers"),
    "pose_source": (
        "pose_source",
        str,
        "auto (pose topic once it publishes, else TF), pose, odom or tf",
    ),
    "corrections_frame": (
        "corrections_frame",
        str,
        "frame whose poses keyframe_corrections gives; empty = the camera",
    ),
    "tf_timeout_s": ("tf_timeout_s", float, "how long an image waits for its transforms"),
    "sync_slop_s": ("sync_slop_s", float, "max colour/depth/info stamp difference"),
    "pose_tolerance_s": ("pose_tolerance_s", float, "max image-to-pose time distance"),
    "time_jump_policy": (
        "time_jump_policy",
        str,
        "when sensor time jumps back (a replayed bag): reset the scene or keep it",
    ),
    "num_views": ("num_views", int, "views per query"),
    "buffer_capacity": ("buffer_capacity", int, "keyframes kept"),
    "max_scene_tokens": ("max_scene_tokens", int, "cap on scene tokens"),
    "max_new_tokens": ("max_new_tokens", int, "default answer length"),
    "temperature": ("temperature", float, "default sampling temperature"),
    "constrain_boxes": ("constrain_boxes", bool, "decode boxes through the box grammar"),
    "max_pending_queries": ("max_pending_queries", int, "queries waiting before BUSY"),
    "axis_align": (
        "axis_align",
        str,
        "floor alignment: auto (when the world looks not z-up), on or off (true/false = on/off)",
    ),
    "sensor_qos": ("sensor_qos", str, "sensor_data or reliable"),
    "ingest_rate_hz": ("ingest_rate_hz", float, "images taken per second; 0 = every frame"),
}
# launch argument -> the node's relative input topic it remaps
REMAP_ARGS = {
    "rgb_topic": "rgb/image",
    "rgb_info_topic": "rgb/camera_info",
    "depth_topic": "depth/image",
    "depth_info_topic": "depth/camera_info",
    "pose_topic": "pose",
    "odom_topic": "odom",
    "clicked_point_topic": "clicked_point",
}


def _cast(kind, text):
    if kind is bool:
        return text.lower() in ("1", "true", "yes")
    return kind(text)


def _node(context):
    overrides = {}
    for arg, (param, kind, _) in PARAM_ARGS.items():
        value = LaunchConfiguration(arg).perform(context)
        if value != "":
            overrides[param] = _cast(kind, value)
    remappings = []
    for arg, topic in REMAP_ARGS.items():
        value = LaunchConfiguration(arg).perform(context)
        if value:
            remappings.append((topic, value))
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    return [
        LifecycleNode(
            package="llava3d_ros",
            executable="llava3d_node",
            name="llava3d",
            namespace=LaunchConfiguration("namespace").perform(context),
            parameters=[
                LaunchConfiguration("params_file").perform(context),
                overrides,
                {"use_sim_time": use_sim_time},
            ],
            remappings=remappings,
            autostart=LaunchConfiguration("autostart").perform(context).lower() == "true",
            output="screen",
        )
    ]


def generate_launch_description():
    share = get_package_share_directory("llava3d_ros")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "default.yaml"),
            description="preset YAML (config/default.yaml, cpu_tiny.yaml, jetson_orin.yaml)",
        ),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="configure and activate at start"
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="follow /clock (rosbag replay)"
        ),
    ]
    args += [
        DeclareLaunchArgument(a, default_value="", description=f"{d} (empty = preset value)")
        for a, (_, _, d) in PARAM_ARGS.items()
    ]
    args += [
        DeclareLaunchArgument(
            a, default_value="", description=f"remap the node's {t} (empty = none)"
        )
        for a, t in REMAP_ARGS.items()
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_node)])
