from .formatting import *  # noqa: F401,F403
from .geometric import *  # noqa: F401,F403
from .loading import *  # noqa: F401,F403
from .sparse_sampling import *  # noqa: F401,F403
from .wsss import *  # noqa: F401,F403  (issue 12, mmseg scope)
from .counting import *  # noqa: F401,F403
from .sparse_seg_labels import *  # noqa: F401,F403  (issue 11, mmseg TRANSFORMS)
