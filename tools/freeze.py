"""Write the lock: every distribution pip installed in this environment, pinned.

`pip freeze` also lists the metadata the ROS 2 wheels carry for their bundled Python
packages (action_msgs, rclpy, ...), which are not installable by themselves; only
distributions whose INSTALLER is pip belong in the lock. The torch family (torch, triton,
nvidia-*, cuda-*, and whatever requirements-torch-*.lock pins) is left out: it has locks of
its own, one per torch build (tools/lock_torch.py). So is whatever lies outside the venv (the
system site-packages a venv of LLAVA3D_TORCH=system sees).
"""

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

from lock_torch import canonical, pins  # tools/ is sys.path[0]: this runs as a script

ROOT = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix).resolve()
FAMILY = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
torch_locked = {name for lock in ROOT.glob("requirements-torch-*.lock") for name in pins(lock)}

frozen = set()
for dist in distributions():
    name = dist.metadata["Name"]
    if (dist.read_text("INSTALLER") or "").strip() != "pip" or name.lower() == "llava3d_ros":
        continue
    if FAMILY.match(canonical(name)) or canonical(name) in torch_locked:
        continue
    if not Path(str(dist.locate_file(""))).resolve().is_relative_to(PREFIX):
        continue
    frozen.add(f"{name}=={dist.version}")
sys.stdout.write("".join(f"{p}\n" for p in sorted(frozen, key=str.lower)))
