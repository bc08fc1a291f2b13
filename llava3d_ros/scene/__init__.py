"""Frames, keyframe buffer, view selection and dataset readers (ROS-free)."""
