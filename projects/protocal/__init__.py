"""protocal: prototype-calibrated weak and sparse supervision for computational pathology.

Importing this package registers every dataset, transform, codec, model, loss, metric and
visualizer into the MMDetection / MMSegmentation registries.
"""
from .version import __version__  # noqa: F401
from . import utils  # noqa: F401  (applies the torch / mmengine compatibility fixes first)
from . import codecs, datasets, evaluation, models, prototypes, structures, visualization  # noqa: F401,E501
from . import engine  # noqa: F401,E402  (training hooks: ProCNS pseudo-label schedule, issue 11)
