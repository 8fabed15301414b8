"""Training-loop parts (hooks) shared by protocal's methods."""
from . import hooks  # noqa: F401
from .hooks import PseudoLabelHook

__all__ = ['PseudoLabelHook']
