"""The ROS 2 edge: message conversion, the lifecycle node, queries, markers, diagnostics."""
