"""Every node parameter in one table: name, default, range and description (read in on_configure).

``PARAMS`` is the only place a parameter is named: ``Settings``, the validated values one
configure read, is a dataclass made from it (``dataclasses.make_dataclass``), one field per
parameter in table order, typed by its default's type (``camera_in_base``: ``list``). Build it
with ``Settings.from_values(values)``; read it as ``settings.<name>``. The price: type checkers
cannot see fields made at run time, so they are shown a stand-in class (under
``TYPE_CHECKING``) on which every ``settings.<name>`` is ``Any``: names and types of settings
are not checked statically any more (test/ros/test_static_config.py checks the names against
``PARAMS``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import TYPE_CHECKING, Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    # old values still accepted (a parameter that changed type): (old value, its new value);
    # such a parameter is declared with dynamic typing so that ROS lets the old type through
    legacy: tuple[tuple[Any, str], ...] = ()


PARAMS: tuple[Param, ...] = (
    Param(
        "model_path",
        "",
        "LLaVA-3D checkpoint directory (safetensors); empty = the embedded default model",
    ),
    Param(
        "random_weights",
        False,
        "with model_path empty: a tiny random-weight model built in-process instead of the "
        "embedded default (smoke tests; answers are noise and labelled random-weights)",
    ),
    Param(
        "vision_tower_path", "", "CLIP vision tower directory; empty = <model_path>/vision_tower"
    ),
    Param("device", "auto", "torch device: auto, cpu, cuda or cuda:N"),
    Param(
        "torch_threads",
        0,
        "torch intra-op threads (0 = torch's default); 1 avoids thread hand-off costs of small "
        "ops on few-core CPUs",
        (0, 256),
    ),
    Param(
        "dtype",
        "auto",
        "weights precision: auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16",
        choices=("auto", "fp32", "fp16", "bf16"),
    ),
    Param(
        "quantize",
        "none",
        "weight-only quantisation of the language model's Linear layers (torchao): none, int8 "
        "(about half the weight memory of fp16) or int4 (about a third; CUDA needs compute "
        "capability 8.0+); the CLIP tower stays in dtype",
        choices=("none", "int8", "int4"),
    ),
    Param("world_frame", "map", "fixed frame of poses, answers, boxes and markers"),
    Param(
        "pose_source",
        "auto",
        "camera pose input: auto (the pose topic once it publishes, TF until then), pose "
        "(PoseStamped of the camera), odom (Odometry × camera_in_base) or tf (world_frame ← "
        "the image's frame_id); pose and odom may be in any frame TF connects to world_frame",
        choices=("auto", "pose", "odom", "tf"),
    ),
    Param(
        "cameras",
        [""],
        "camera namespaces, each with rgb/image, rgb/camera_info, depth/image, "
        "depth/camera_info (and pose/odom) under it; [''] = one camera on the node's own topics",
    ),
    Param(
        "tf_cache_s", 10.0, "history kept per TF edge (and so how old a click may be)", (0.5, 600.0)
    ),
    Param(
        "tf_timeout_s",
        0.5,
        "how long (in message time) an image waits for transforms still in flight",
        (0.0, 10.0),
    ),
    Param(
        "tf_backend",
        "auto",
        "auto (tf2_ros where installed, else the node's own buffer fed by /tf and /tf_static), "
        "tf2_ros or own",
        choices=("auto", "tf2_ros", "own"),
    ),
    Param(
        "recent_frames_held",
        30,
        "matched frames per camera whose depth is held for PIXEL clicks on non-keyframes "
        "(others are placed by rendering keyframes into the camera)",
        (0, 1000),
    ),
    Param(
        "rgb_transport",
        "raw",
        "colour input: raw (rgb/image) or compressed (rgb/image/compressed: JPEG or PNG, as "
        "image_transport publishes it)",
        choices=("raw", "compressed"),
    ),
    Param(
        "depth_transport",
        "raw",
        "depth input: raw (depth/image) or compressedDepth (depth/image/compressedDepth: "
        "16UC1 or 32FC1 PNG, or RVL)",
        choices=("raw", "compressedDepth"),
    ),
    Param(
        "depth_to_color",
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "depth camera pose in the colour camera (x y z qx qy qz qw), used to register depth "
        "that has its own camera_info and frame when TF does not connect the two; all zeros = "
        "not given (TF)",
    ),
    Param(
        "clicked_point_global",
        True,
        "also take clicks from the absolute /clicked_point (RViz's Publish Point tool) when the "
        "node is namespaced; off for several robots sharing one RViz",
    ),
    Param(
        "corrections_frame",
        "",
        "keyframe_corrections: the frame whose poses the Path gives (a TF-known fixed offset "
        "from each camera); empty = the poses are the camera's own",
    ),
    Param(
        "corrections_tolerance_s",
        0.05,
        "keyframe_corrections: a keyframe is re-posed from Path poses within this time",
        (0.0, 5.0),
    ),
    Param(
        "camera_in_base",
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        "odom only: camera optical frame in the odometry child frame, x y z qx qy qz qw",
    ),
    Param(
        "sync_slop_s",
        0.02,
        "max stamp difference between colour, depth and camera_info",
        (0.0, 1.0),
    ),
    Param(
        "pose_tolerance_s",
        0.05,
        "max distance in time from the image stamp to a usable pose",
        (0.0, 5.0),
    ),
    Param(
        "pose_wait_s",
        0.5,
        "how long (in message time) a frame waits for a pose after its stamp",
        (0.0, 10.0),
    ),
    Param(
        "time_jump_threshold_s",
        0.5,
        "an image or pose stamped this much before the newest one means sensor time restarted "
        "(a replayed bag, a restarted simulator, a sim-time reset): see time_jump_policy",
        (0.001, 3600.0),
    ),
    Param(
        "time_jump_policy",
        "reset",
        "when sensor time jumps back: reset (drop the scene, start anew: the old views belong "
        "to another run) or keep (keep the keyframes, accept the new time line)",
        choices=("reset", "keep"),
    ),
    Param(
        "use_depth_camera_info",
        False,
        "also require depth/camera_info (else depth is registered to colour)",
    ),
    Param(
        "sensor_qos",
        "sensor_data",
        "QoS of the sensor subscriptions: sensor_data (best effort), reliable",
        choices=("sensor_data", "reliable"),
    ),
    Param("sensor_queue_size", 5, "history depth of each sensor subscription", (1, 100)),
    Param(
        "ingest_rate_hz",
        5.0,
        "images are taken from DDS at about this rate (newest one each time; the scene keeps "
        "a few keyframes per second); 0 = every frame",
        (0.0, 1000.0),
    ),
    Param("num_views", 8, "views given to the model per query (the release used 20)", (1, 64)),
    Param(
        "keyframe_min_translation_m",
        0.1,
        "a frame becomes a keyframe after moving this far",
        (0.0, 10.0),
    ),
    Param("keyframe_min_rotation_deg", 10.0, "... or after turning this much", (0.0, 180.0)),
    Param("keyframe_max_interval_s", 5.0, "... or after this long", (0.0, 3600.0)),
    Param(
        "buffer_capacity", 64, "keyframes kept (the most redundant is evicted beyond it)", (1, 2000)
    ),
    Param("buffer_max_mb", 512, "memory bound of the keyframe buffer in MiB", (1, 65536)),
    Param(
        "patch_depth_mode",
        "robust",
        "3D patch positions: robust (median depth) or upstream (bit-exact)",
        choices=("robust", "upstream"),
    ),
    Param(
        "image_resample",
        "pillow",
        "colour resize to the model input: pillow (bicubic, bit-identical to CLIP's "
        "preprocessing) or opencv (bilinear, ~3x faster per keyframe, mean difference 0.4/255)",
        choices=("pillow", "opencv"),
    ),
    Param("voxel_size_m", 0.2, "voxel size of the 3D patch pooling", (0.01, 5.0)),
    Param("max_scene_tokens", 2560, "cap on voxel (scene) tokens per query", (1, 8192)),
    Param("max_new_tokens", 128, "default answer length cap in tokens", (1, 4096)),
    Param("temperature", 0.0, "default sampling temperature (0 = greedy)", (0.0, 5.0)),
    Param(
        "constrain_boxes",
        True,
        "inside [...] in answers, decode only tokens that keep it a readable box (6 or 9 "
        "numbers, positive extents); false = the model's own tokens",
    ),
    Param(
        "decode_path",
        "auto",
        "answer decoding: auto (static on CUDA, eager elsewhere), eager (KV cache grown every "
        "token, one Python step per token) or static (preallocated KV cache; per-token step "
        "compiled into a CUDA graph on CUDA, uncompiled on CPU)",
        choices=("auto", "eager", "static"),
    ),
    Param(
        "max_pending_queries",
        4,
        "queries waiting beyond the running one; more get BUSY at once",
        (0, 1000),
    ),
    Param(
        "query_timeout_s",
        0.0,
        "a query still unfinished this long after submission gets TIMEOUT (0 = never)",
        (0.0, 3600.0),
    ),
    Param("max_question_chars", 4000, "longer questions get BAD_REQUEST", (1, 1_000_000)),
    Param("max_clicks", 8, "more clicks in one query get BAD_REQUEST", (1, 256)),
    Param(
        "max_views_limit",
        32,
        "a request's max_views above this gets BAD_REQUEST (num_views must not exceed it)",
        (1, 64),
    ),
    Param(
        "max_new_tokens_limit",
        2048,
        "a request's max_new_tokens above this gets BAD_REQUEST",
        (1, 4096),
    ),
    Param(
        "max_image_pixels",
        3840 * 2160,
        "larger rgb/depth images are dropped and reported as input errors",
        (1, 100_000_000),
    ),
    Param(
        "client_rate_hz",
        0.0,
        "queries per second one client_id may sustain; beyond it (after client_burst) BUSY "
        "(0 = no limit)",
        (0.0, 1000.0),
    ),
    Param(
        "client_burst",
        10,
        "queries one client_id may send back to back before client_rate_hz applies",
        (1, 10000),
    ),
    Param(
        "axis_align",
        "auto",
        "floor alignment to the z-up frame LLaVA-3D expects: auto (estimated from the floor "
        "when the cameras' mean up is over 20° from world +z, else identity), on (always "
        "estimated) or off (identity: the world frame is taken as z-up; warns when it looks "
        "tilted); the old booleans still work: true = on, false = off",
        choices=("auto", "on", "off"),
        legacy=((True, "on"), (False, "off"), ("true", "on"), ("false", "off")),
    ),
    Param("publish_scene_points", True, "publish ~/scene_points (patch centres of the keyframes)"),
    Param("publish_debug_image", True, "publish ~/debug_image (newest keyframe with boxes)"),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", (0.05, 60.0)),
)


def descriptor(p: Param) -> ParameterDescriptor:
    """The ROS descriptor of a table entry (description, and range where there is one)."""
    desc = p.description + (f" (one of: {', '.join(p.choices)})" if p.choices else "")
    d = ParameterDescriptor(name=p.name, description=desc, dynamic_typing=bool(p.legacy))
    if p.range is not None:
        lo, hi = p.range
        if isinstance(p.default, bool) or not isinstance(p.default, int | float):
            raise TypeError(f"parameter {p.name}: a range needs a numeric default")
        if isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            d.floating_point_range = [
                FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
            ]
    return d


def _from_legacy(p: Param, value: Any) -> Any:
    """The new value of an old one of ``p`` (strings compared case-insensitively), else value."""
    for old, new in p.legacy:
        if type(value) is not type(old):
            continue
        if value == old or (isinstance(value, str) and value.lower() == old):
            return new
    return value


class _SettingsBase:
    """What ``Settings`` adds to its fields: validated construction from the parameter values."""

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Settings:
        """Validate choices (ranges are enforced by ROS at set time) and build the settings.

        Legacy values are mapped to their new ones first (``axis_align: true`` → ``on``).
        """
        values = {**values}
        for p in PARAMS:
            if p.legacy and p.name in values:
                values[p.name] = _from_legacy(p, values[p.name])
        for p in PARAMS:
            if p.choices and values[p.name] not in p.choices:
                raise ValueError(
                    f"parameter {p.name}={values[p.name]!r} must be one of {', '.join(p.choices)}"
                )
        if len(values["depth_to_color"]) != 7:
            raise ValueError("parameter depth_to_color needs 7 numbers: x y z qx qy qz qw")
        if len(values["camera_in_base"]) != 7:
            raise ValueError("parameter camera_in_base needs 7 numbers: x y z qx qy qz qw")
        if not values["cameras"] or len(set(values["cameras"])) != len(values["cameras"]):
            raise ValueError("parameter cameras needs at least one name, each once ('' = default)")
        if not values["world_frame"]:
            raise ValueError("parameter world_frame must not be empty")
        for default, limit in (
            ("num_views", "max_views_limit"),
            ("max_new_tokens", "max_new_tokens_limit"),
        ):
            if values[default] > values[limit]:
                raise ValueError(
                    f"parameter {default}={values[default]} exceeds {limit}={values[limit]}"
                )
        return cls(**{f.name: values[f.name] for f in fields(cls)})


if TYPE_CHECKING:
    # a type checker cannot see the fields made below: every attribute reads as Any for it

    class Settings(_SettingsBase):
        def __getattr__(self, name: str) -> Any: ...

else:
    Settings = make_dataclass(
        "Settings",
        [(p.name, type(p.default)) for p in PARAMS],
        bases=(_SettingsBase,),
        namespace={
            "__doc__": "The parameter values one configure read, validated.",
            "__module__": __name__,  # make_dataclass's own module= needs Python 3.12
        },
    )
