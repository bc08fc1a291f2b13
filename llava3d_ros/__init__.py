"""llava3d_ros: a ROS 2 perception node that answers questions about a live RGB-D scene with LLaVA-3D.

The core (``geometry``, ``scene``, ``model``, ``synthetic``) is ROS-free; ``ros`` is the edge.
Generated interface modules (``msg``, ``srv``, ``action``) are built by ``tools/setup.sh``
(or colcon) next to the hand-written code.
"""

__version__ = "0.1.0"
