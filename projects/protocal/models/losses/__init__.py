"""Heatmap losses, one file per paper (``ce.py`` is the shared soft cross-entropy)."""
from .ce import SoftCrossEntropyLoss
from .pcl import ExclusiveLoss, PrototypeCalibratedLoss
from .sel import SemanticEnergyLoss, StretchedFeatureLoss

__all__ = [
    'SoftCrossEntropyLoss', 'SemanticEnergyLoss', 'StretchedFeatureLoss', 'ExclusiveLoss',
    'PrototypeCalibratedLoss'
]
