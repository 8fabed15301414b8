"""Utilities: compatibility fixes for the pinned stack and pre-flight checks for the tools.

Importing this package applies :func:`~protocal.utils.compat.apply_compat_patches` (once).
"""
from .arrays import to_numpy
from .compat import (CPUDistributedDataParallel, adapt_cfg_to_device, apply_compat_patches,
                     atomic_write, is_cpu_only)
from .memory import release_freed_memory
from .setup_env import (build_runner, check_data_roots, check_file_exists, default_work_dir,
                        iter_data_roots)

apply_compat_patches()

__all__ = [
    'apply_compat_patches', 'adapt_cfg_to_device', 'is_cpu_only', 'atomic_write',
    'CPUDistributedDataParallel', 'check_data_roots', 'check_file_exists', 'default_work_dir',
    'iter_data_roots', 'release_freed_memory', 'build_runner',
    'to_numpy'
]
