# LPD (issue 12, mmseg scope)
from .lpd import FrozenImageEncoder, LPDSegmentor  # noqa: E402,F401
from .wsss_postprocess import add_background, dense_crf, normalise_cams  # noqa: E402,F401
# ProCNS / sparse-label segmentation (issue 11, mmseg scope)
from .pseudo_label_store import PseudoLabelStore  # noqa: E402,F401
from .sparse_label_segmentor import SparseLabelSegmentor  # noqa: E402,F401
