"""Heatmap losses, one file per paper (``ce.py`` is the shared soft cross-entropy)."""
from .ce import SoftCrossEntropyLoss
from .pcl import ExclusiveLoss, PrototypeCalibratedLoss
from .sel import SemanticEnergyLoss, StretchedFeatureLoss

__all__ = [
    'SoftCrossEntropyLoss', 'SemanticEnergyLoss', 'StretchedFeatureLoss', 'ExclusiveLoss',
    'PrototypeCalibratedLoss'
]
# LPD losses (issue 12, mmseg scope)
from .lpd import MultiStageBCELoss, PrototypeDiversityLoss, PrototypeInfoNCELoss  # noqa: E402

__all__ += ['MultiStageBCELoss', 'PrototypeInfoNCELoss', 'PrototypeDiversityLoss']
# MIL counting losses (issue 13, mmseg scope)
from .mil import MILCountLoss, MILDiceLoss, MILTileLoss, soft_dice_loss  # noqa: E402

__all__ += ['MILCountLoss', 'MILTileLoss', 'MILDiceLoss', 'soft_dice_loss']

# ProCNS and WSL4MIS baselines (issue 11, mmseg scope)
from .procns import ProCNSLoss  # noqa: E402
from .wsl_baselines import (EMAPseudoLabelLoss, EntropyMinimizationLoss, GatedCRFLoss,  # noqa: E402
                            PartialCELoss, TotalVariationLoss)

__all__ += ['ProCNSLoss', 'PartialCELoss', 'GatedCRFLoss', 'EntropyMinimizationLoss',
            'TotalVariationLoss', 'EMAPseudoLabelLoss']
