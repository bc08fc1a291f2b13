"""ROS-free asking: requests and their validation, the fair bounded queue, per-client rate
limits, and answering a request from the scene into a world-frame ``AnswerResult``."""
