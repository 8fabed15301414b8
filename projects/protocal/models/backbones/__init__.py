"""Backbones that MMDetection / MMSegmentation do not provide."""
from .vig import IsotropicViG

__all__ = ['IsotropicViG']

# ProCNS / WSL4MIS U-Net (issue 11, mmseg scope)
from .pymic_unet import PyMICUNet  # noqa: E402

__all__ += ['PyMICUNet']
