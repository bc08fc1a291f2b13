"""Camera, depth and 3D-patch geometry (ROS-free)."""
