"""mmengine hooks of protocal's segmentation methods (registered in ``mmseg.registry.HOOKS``)."""
from .pseudo_label_hook import PseudoLabelHook

__all__ = ['PseudoLabelHook']
