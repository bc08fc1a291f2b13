"""LLaVA-3D modules, loader, prompts, generation and answer parsing (ROS-free)."""
