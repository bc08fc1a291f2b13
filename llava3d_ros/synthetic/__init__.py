"""Procedural 3D scenes, the tiny model's training and its evaluation (ROS-free)."""
