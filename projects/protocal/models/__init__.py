from . import backbones, detectors, heads, losses, segmentors  # noqa: F401
