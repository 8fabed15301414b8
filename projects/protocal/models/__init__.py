from . import backbones, detectors, heads, losses, segmentors  # noqa: F401
from . import mil  # noqa: F401,E402  (MIL counting, issue 13)
