"""Small conversions shared by the metric, the visualizer and the exporters."""
from typing import Any

__all__ = ['to_numpy']


def to_numpy(value: Any) -> Any:
    """A tensor as a numpy array (detached, on the CPU); anything else unchanged."""
    if hasattr(value, 'detach'):
        return value.detach().cpu().numpy()
    return value
