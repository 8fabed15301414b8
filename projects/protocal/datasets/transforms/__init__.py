from .formatting import *  # noqa: F401,F403
from .geometric import *  # noqa: F401,F403
from .loading import *  # noqa: F401,F403
from .sparse_sampling import *  # noqa: F401,F403
