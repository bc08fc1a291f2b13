"""llava3d_ros: a ROS 2 perception node that answers questions about a live RGB-D scene with LLaVA-3D.

The core (``geometry``, ``scene``, ``model``, ``synthetic``) is ROS-free; ``ros`` is the edge.
Generated interface modules (``msg``, ``srv``, ``action``) are built by ``tools/setup.sh``
(or colcon) next to the hand-written code.
"""

__version__ = "0.1.0"

import logging as _logging

# transformers imports torchao (the quantize parameter) in every process; on a CPU build of
# torch, torchao's import warns about its CUDA-only kernel libraries (mxfp8, CUTLASS sm90a,
# unused here) and torch about torchao's enum registrations: noise on every command's stderr.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
