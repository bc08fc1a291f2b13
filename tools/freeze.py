"""Write the lock: every distribution pip installed in this environment, pinned.

`pip freeze` also lists the metadata the ROS 2 wheels carry for their bundled Python
packages (action_msgs, rclpy, ...), which are not installable by themselves; only
distributions whose INSTALLER is pip belong in the lock.
"""

import sys
from importlib.metadata import distributions

pins = set()
for dist in distributions():
    name = dist.metadata["Name"]
    if (dist.read_text("INSTALLER") or "").strip() != "pip" or name.lower() == "llava3d_ros":
        continue
    pins.add(f"{name}=={dist.version}")
sys.stdout.write("".join(f"{p}\n" for p in sorted(pins, key=str.lower)))
