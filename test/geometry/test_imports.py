"""geometry imports without torch: the node's start-up and the ``query`` CLI need it, not torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import llava3d_ros.geometry

GEOMETRY_MODULES = sorted(
    f"llava3d_ros.geometry.{m.name}" for m in pkgutil.iter_modules(llava3d_ros.geometry.__path__)
)


def test_the_module_list_is_complete() -> None:
    assert {"llava3d_ros.geometry.unproject", "llava3d_ros.geometry.voxels"} <= set(
        GEOMETRY_MODULES
    )
    assert len(GEOMETRY_MODULES) >= 8


def test_geometry_imports_without_torch() -> None:
    # a fresh interpreter: this one has long imported torch through other tests
    code = (
        f"import {', '.join(GEOMETRY_MODULES)}; import sys; "
        "assert 'torch' not in sys.modules, 'geometry imported torch'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
