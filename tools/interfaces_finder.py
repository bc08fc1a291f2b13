"""Finds llava3d_ros's generated ROS interfaces inside the virtual environment that runs.

tools/setup.sh copies this module into a venv's site-packages as `_llava3d_ros_interfaces.py`,
with a `.pth` file that imports it at start-up, and puts the rosidl-generated Python of
`llava3d_ros.msg`, `.srv`, `.action` and the typesupport extension modules into the folder
`llava3d_ros-interfaces/` beside it (a name that is not importable by itself). Those files
differ per ROS 2 distribution, so they live in each distribution's venv, while the
hand-written package stays one editable source tree shared by every venv.

The finder sits last on `sys.meta_path`: it answers only for direct children of
`llava3d_ros` that nothing earlier found, so a source tree or a colcon install that carries
its own generated modules always wins.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

PACKAGE = "llava3d_ros"
GENERATED = str(Path(__file__).resolve().parent / "llava3d_ros-interfaces")


class GeneratedInterfacesFinder:
    """`llava3d_ros.<child>` from this venv's generated interfaces folder."""

    @classmethod
    def find_spec(cls, fullname: str, path=None, target=None) -> ModuleSpec | None:
        parent, _, _ = fullname.rpartition(".")
        if parent != PACKAGE:
            return None
        return PathFinder.find_spec(fullname, [GENERATED])


def install() -> None:
    if GeneratedInterfacesFinder not in sys.meta_path:
        sys.meta_path.append(GeneratedInterfacesFinder)


install()
