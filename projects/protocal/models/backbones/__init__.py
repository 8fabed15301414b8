"""Backbones that MMDetection / MMSegmentation do not provide."""
from .vig import IsotropicViG

__all__ = ['IsotropicViG']
