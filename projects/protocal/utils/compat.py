"""Compatibility fixes for the pinned stack.

protocal is tested with torch 2.13 (CPU), mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0 and
mmsegmentation 1.2.2. The OpenMMLab 2.x releases predate several PyTorch changes and assume a
CUDA machine in a few places. This module holds the few narrow patches that make the pinned stack
work as documented; :func:`apply_compat_patches` runs them once when ``protocal`` is imported (it
is idempotent, a second call is a no-op), and :func:`adapt_cfg_to_device` adjusts a config to the
machine it runs on (called by ``tools/train.py`` and ``tools/test.py``).

Patches (each function below documents why it is needed):

1. :func:`patch_checkpoint_loading` -- local checkpoints are loaded with
   ``torch.load(weights_only=False)`` (torch >= 2.6 defaults to ``weights_only=True``, which
   cannot unpickle the numpy / mmengine objects an mmengine checkpoint contains).
2. :func:`patch_atomic_checkpoint_save` -- checkpoints and the ``last_checkpoint`` pointer are
   written to a temporary file and renamed, so a crash never leaves a truncated file behind.
3. :func:`patch_cpu_init_dist` -- distributed launch on a machine without CUDA uses the ``gloo``
   backend and skips ``torch.cuda.set_device``.
4. :class:`CPUDistributedDataParallel` -- a DDP wrapper that does not pass ``device_ids`` for
   a CPU module (selected by :func:`adapt_cfg_to_device`).
5. :func:`silence_known_deprecations` -- hides deprecation warnings that the pinned OpenMMLab
   releases trigger on every run and that users cannot act on (installed when this module is
   imported, before mmengine, whose import already triggers some).

Trust assumption: checkpoints are pickles. Loading one with ``weights_only=False`` can execute
arbitrary code, exactly as with torch < 2.6. Only load local checkpoint files you trust (your own
training runs or files from a source you trust). Remote checkpoints (``http(s)://``,
``torchvision://``, ...) keep torch's safe default; download and inspect them first if a remote
file needs full unpickling.
"""
from __future__ import annotations

import builtins
import contextlib
import logging
import os
import os.path as osp
import sys
import warnings
from typing import Any, Callable, Iterator, List, Optional

import torch

__all__ = [
    'apply_compat_patches', 'adapt_cfg_to_device', 'is_cpu_only', 'patch_checkpoint_loading',
    'patch_atomic_checkpoint_save', 'patch_cpu_init_dist', 'silence_known_deprecations',
    'atomic_write', 'CPUDistributedDataParallel', 'SYNC_BN_TYPES'
]

#: Marker attribute set on every replacement function; makes each patch idempotent.
_PATCH_MARK = '__protocal_compat__'

#: Norm layer types that synchronise statistics across processes (CUDA only).
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'nn.SyncBatchNorm', 'SyncBatchNorm')

#: Model wrappers that may be replaced by :class:`CPUDistributedDataParallel` on CPU.
_DDP_WRAPPER_TYPES = ('MMDistributedDataParallel', 'CPUDistributedDataParallel')


def _log(msg: str, level: int = logging.INFO) -> None:
    """Log through mmengine's current logger (falls back to ``print`` before one exists)."""
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


def _rebind(original: Any, replacement: Any, prefixes=('mmengine', 'mmdet', 'mmseg',
                                                        'mmcv')) -> None:
    """Replace every module-level reference to ``original`` in already imported OpenMMLab modules.

    ``from x import f`` copies the function into the importing module, so patching the defining
    module alone is not enough (e.g. ``mmengine.runner.runner`` holds its own ``save_checkpoint``
    and ``init_dist``). Modules imported later pick up the replacement from the patched module.
    """
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(prefixes):
            continue
        namespace = getattr(module, '__dict__', None)
        if not namespace:
            continue
        for attr, value in list(namespace.items()):
            if value is original:
                setattr(module, attr, replacement)


def is_cpu_only() -> bool:
    """Whether the process runs on CPU (no CUDA, NPU, MLU or MUSA device, as mmengine sees it)."""
    from mmengine.device import get_device
    return get_device() == 'cpu'


# --------------------------------------------------------------------------------------------
# 0. Known deprecation noise (installed first: importing mmengine already triggers some)
# --------------------------------------------------------------------------------------------
#: (message regex, category) pairs of warnings raised inside the pinned OpenMMLab releases.
KNOWN_DEPRECATIONS = (
    # mmengine / mmcv import pkg_resources (setuptools < 81 is pinned for it)
    (r'pkg_resources is deprecated', UserWarning),
    # mmcv / mmdet decorate helpers with torch.jit.script / interface (deprecated in torch 2.x)
    (r'`torch\.jit\.script` is deprecated', DeprecationWarning),
    (r'`torch\.jit\.interface` is deprecated', DeprecationWarning),
    # mmengine's AMP wrapper uses the torch.cuda.amp aliases
    (r'`torch\.cuda\.amp\.\w+\(args\.\.\.\)` is deprecated', FutureWarning),
    # torch 2.13 DDP deprecates broadcast_buffers, which mmengine's Runner always passes (False);
    # the suggested forward_sync_buffers=False is not equivalent (it still syncs at init)
    (r'`broadcast_buffers` is deprecated', FutureWarning),
    # mmcv.cnn.bricks.transformer re-exports an op that moved to mmcv.ops
    (r'``MultiScaleDeformableAttention`` has been moved', ImportWarning),
)


def silence_known_deprecations() -> None:
    """Hide deprecation warnings raised inside the pinned OpenMMLab releases.

    They appear on every run, point at third-party code the user cannot change, and bury real
    warnings. Only these exact messages are filtered; everything else is still shown.
    """
    for message, category in KNOWN_DEPRECATIONS:
        warnings.filterwarnings('ignore', message=message, category=category)


silence_known_deprecations()


# --------------------------------------------------------------------------------------------
# 1. Checkpoint loading under torch >= 2.6
# --------------------------------------------------------------------------------------------
def _supports_weights_only() -> bool:
    import inspect
    return 'weights_only' in inspect.signature(torch.load).parameters


def trusted_load_from_local(filename: str, map_location: Any = None) -> Any:
    """Load a local checkpoint file with full unpickling (``weights_only=False``).

    Drop-in replacement for ``mmengine.runner.checkpoint.load_from_local``. mmengine checkpoints
    hold more than tensors: the message hub (``mmengine.logging.HistoryBuffer`` with numpy
    arrays), numpy scalars in ``meta``, dataset metainfo. Since torch 2.6, ``torch.load``
    defaults to ``weights_only=True`` and refuses these, which breaks ``load_from``, ``resume``
    and ``tools/test.py``. Only use it with files you trust (see the module docstring).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if _supports_weights_only():
        return torch.load(filename, map_location=map_location, weights_only=False)
    return torch.load(filename, map_location=map_location)  # pragma: no cover (torch < 1.13)


setattr(trusted_load_from_local, _PATCH_MARK, True)
# ``CheckpointLoader`` logs ``Loads checkpoint by <__name__[10:]> backend``
trusted_load_from_local.__name__ = 'load_from_trusted_local'


def patch_checkpoint_loading() -> None:
    """Register :func:`trusted_load_from_local` as mmengine's loader for local paths.

    mmengine resolves every checkpoint path through ``CheckpointLoader``: ``Runner.load_checkpoint``
    / ``Runner.resume`` -> ``_load_checkpoint`` -> ``CheckpointLoader.load_checkpoint`` -> the
    loader registered for the path's scheme. Local paths use the scheme ``''``; overriding that
    one loader (mmengine's own extension point, ``force=True``) is the narrowest fix: ``torch.load``
    keeps its safe default everywhere else, including remote downloads.
    """
    from mmengine.runner import checkpoint as ckpt_module
    loader_cls = ckpt_module.CheckpointLoader
    current = loader_cls._schemes.get('')
    if getattr(current, _PATCH_MARK, False):
        return
    loader_cls.register_scheme(prefixes='', loader=trusted_load_from_local, force=True)
    original = ckpt_module.load_from_local
    if not getattr(original, _PATCH_MARK, False):
        _rebind(original, trusted_load_from_local)


# --------------------------------------------------------------------------------------------
# 2. Atomic checkpoint writes
# --------------------------------------------------------------------------------------------
def _fsync_dir(dirname: str) -> None:
    """Best effort: persist a rename by syncing its directory (POSIX only)."""
    if os.name != 'posix':  # pragma: no cover
        return
    with contextlib.suppress(OSError):
        fd = os.open(dirname, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(filename: str, mode: str = 'wb', **open_kwargs: Any) -> Iterator[Any]:
    """Open ``filename + '.tmp'`` for writing; on success fsync it and rename it to ``filename``.

    The temporary file lives in the same directory, so ``os.replace`` is an atomic rename on
    POSIX and Windows: readers see either the old complete file or the new complete file. If the
    body raises (or the process is interrupted by an exception), the temporary file is removed
    and ``filename`` is left untouched.

    Args:
        filename (str): Final path.
        mode (str): ``'wb'`` or ``'w'`` (text). Defaults to ``'wb'``.
        **open_kwargs: Passed to :func:`open` (e.g. ``encoding``).
    """
    if not mode.startswith('w'):
        raise ValueError(f'atomic_write only supports write modes, got mode={mode!r}')
    filename = os.fspath(filename)
    dirname = osp.dirname(osp.abspath(filename))
    os.makedirs(dirname, exist_ok=True)
    tmp = filename + '.tmp'
    try:
        with builtins.open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(dirname)


def _is_local_target(filename: Any, file_client_args: Optional[dict],
                     backend_args: Optional[dict]) -> bool:
    """Whether mmengine would write ``filename`` with its local-disk backend."""
    if file_client_args is not None or not isinstance(filename, (str, os.PathLike)):
        return False
    filename = os.fspath(filename)
    if filename.startswith('pavi://'):
        return False
    from mmengine.fileio import LocalBackend, get_file_backend
    try:
        backend = get_file_backend(filename, backend_args=backend_args)
    except Exception:  # unknown prefix: let mmengine raise its own error
        return False
    return isinstance(backend, LocalBackend)


def _make_atomic_save_checkpoint(original: Callable) -> Callable:

    def save_checkpoint(checkpoint: dict,
                        filename: str,
                        file_client_args: Optional[dict] = None,
                        backend_args: Optional[dict] = None) -> None:
        """Save a checkpoint; local files are written atomically (see :func:`atomic_write`).

        Same signature as ``mmengine.runner.checkpoint.save_checkpoint``. Remote backends
        (pavi, petrel, ...) are delegated to mmengine unchanged.
        """
        if not _is_local_target(filename, file_client_args, backend_args):
            return original(
                checkpoint, filename, file_client_args=file_client_args,
                backend_args=backend_args)
        with atomic_write(filename, 'wb') as f:
            torch.save(checkpoint, f)

    setattr(save_checkpoint, _PATCH_MARK, True)
    save_checkpoint.__wrapped__ = original  # type: ignore[attr-defined]
    return save_checkpoint


def _atomic_open(file: Any, mode: str = 'r', *args: Any, **kwargs: Any) -> Any:
    """``open`` for modules whose file writes must be atomic: write modes go through
    :func:`atomic_write` (usable as a ``with`` statement only, which is how
    ``CheckpointHook`` writes), everything else is the builtin ``open``."""
    if isinstance(file, (str, os.PathLike)) and mode in ('w', 'wt', 'wb') and not args:
        return atomic_write(file, mode, **kwargs)
    return builtins.open(file, mode, *args, **kwargs)


setattr(_atomic_open, _PATCH_MARK, True)


def patch_atomic_checkpoint_save() -> None:
    """Make checkpoint files and the ``last_checkpoint`` pointer crash-safe.

    mmengine 0.10.7 ``save_checkpoint`` serialises into memory and then writes the bytes straight
    to ``epoch_N.pth``; ``CheckpointHook`` then writes ``work_dir/last_checkpoint`` with a plain
    ``open(..., 'w')``. A crash, ``kill`` or full disk during either write leaves a truncated
    checkpoint or a pointer to one, and ``--resume`` then fails on a corrupt file. The
    replacement writes ``<path>.tmp`` next to the target, fsyncs it and renames it with
    ``os.replace`` (atomic), so the final path always holds a complete file. ``CheckpointHook``
    gets a module-level ``open`` that does the same for write modes (its only ``open`` call is
    the ``last_checkpoint`` write); reads are untouched.
    """
    from mmengine.hooks import checkpoint_hook
    from mmengine.runner import checkpoint as ckpt_module
    original = ckpt_module.save_checkpoint
    if not getattr(original, _PATCH_MARK, False):
        _rebind(original, _make_atomic_save_checkpoint(original))
    if not getattr(checkpoint_hook.__dict__.get('open'), _PATCH_MARK, False):
        checkpoint_hook.open = _atomic_open  # shadows the builtin in that module only


# --------------------------------------------------------------------------------------------
# 3. Distributed launch on CPU
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cuda_set_device_disabled() -> Iterator[None]:
    """Temporarily make ``torch.cuda.set_device`` a no-op (there is no device to select)."""
    original = torch.cuda.set_device

    def _noop_set_device(device: Any) -> None:  # noqa: ARG001
        return None

    torch.cuda.set_device = _noop_set_device
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _make_cpu_init_dist(original: Callable) -> Callable:

    def init_dist(launcher: str, backend: str = 'nccl', init_backend: str = 'torch',
                  **kwargs: Any) -> None:
        """``mmengine.dist.init_dist`` that also works on machines without CUDA.

        On CPU, ``nccl`` is replaced by ``gloo`` and ``torch.cuda.set_device`` (which raises on
        a CPU build of torch) is skipped; everything else is mmengine's own code.
        """
        if not is_cpu_only():
            return original(launcher, backend=backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            _log('No CUDA device: using the "gloo" distributed backend instead of "nccl".')
            backend = 'gloo'
        with _cuda_set_device_disabled():
            return original(launcher, backend=backend, init_backend=init_backend, **kwargs)

    setattr(init_dist, _PATCH_MARK, True)
    init_dist.__wrapped__ = original  # type: ignore[attr-defined]
    return init_dist


def patch_cpu_init_dist() -> None:
    """Let ``--launcher pytorch|slurm|mpi`` start CPU processes.

    ``mmengine.dist.init_dist`` defaults to the ``nccl`` backend and every launcher branch calls
    ``torch.cuda.set_device(local_rank)``, which fails on a CPU-only torch
    (``module 'torch._C' has no attribute '_cuda_setDevice'``). The wrapper (bound wherever
    mmengine imported ``init_dist``, including ``Runner.setup_env``) changes nothing when an
    accelerator is present.
    """
    from mmengine.dist import utils as dist_utils
    original = dist_utils.init_dist
    if getattr(original, _PATCH_MARK, False):
        return
    _rebind(original, _make_cpu_init_dist(original))


def _build_cpu_ddp_class() -> type:
    from mmengine.model import MMDistributedDataParallel
    from mmengine.registry import MODEL_WRAPPERS

    existing = MODEL_WRAPPERS.module_dict.get('CPUDistributedDataParallel')
    if existing is not None:
        return existing

    @MODEL_WRAPPERS.register_module()
    class CPUDistributedDataParallel(MMDistributedDataParallel):
        """:class:`~mmengine.model.MMDistributedDataParallel` for modules on CPU.

        ``Runner.wrap_model`` always passes ``device_ids=[LOCAL_RANK]`` to DDP wrappers, which
        torch rejects for CPU modules ("device_ids and output_device arguments only work with
        single-device/multiple-device GPU modules or CPU modules"). This wrapper drops
        ``device_ids`` / ``output_device`` when the module's parameters are on CPU and behaves
        exactly like its parent otherwise. :func:`adapt_cfg_to_device` selects it.
        """

        def __init__(self, module: torch.nn.Module, detect_anomalous_params: bool = False,
                     **kwargs: Any) -> None:
            on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
            if on_cpu:
                kwargs.pop('device_ids', None)
                kwargs.pop('output_device', None)
            super().__init__(
                module=module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    return CPUDistributedDataParallel


CPUDistributedDataParallel = _build_cpu_ddp_class()


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------
def apply_compat_patches() -> None:
    """Apply every patch of this module once (safe to call again)."""
    silence_known_deprecations()
    patch_checkpoint_loading()
    patch_atomic_checkpoint_save()
    patch_cpu_init_dist()


def _replace_sync_bn(node: Any, path: str, found: List[str]) -> Any:
    """Recursively turn ``type=SyncBN`` norm configs into ``type=BN``; record their paths."""
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            found.append(f'{path}.type' if path else 'type')
            node['type'] = 'BN'
        for key, value in node.items():
            _replace_sync_bn(value, f'{path}.{key}' if path else str(key), found)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _replace_sync_bn(value, f'{path}[{i}]', found)
    return node


def adapt_cfg_to_device(cfg: Any) -> Any:
    """Adapt a full runner config to the machine it runs on (in place; also returned).

    With CUDA (or another mmengine accelerator) the config is returned unchanged. On a CPU-only
    machine:

    * ``env_cfg.dist_cfg.backend``: ``nccl`` (or unset) becomes ``gloo``.
    * distributed runs (``cfg.launcher != 'none'``): ``model_wrapper_cfg`` becomes
      ``CPUDistributedDataParallel`` (keeping its other keys); a custom non-DDP wrapper
      (FSDP, DeepSpeed, ...) or explicit ``device_ids`` raise ``ValueError``.
    * SyncBN norm layers in ``cfg.model`` (``SyncBN``, ``MMSyncBN``) become ``BN`` with one
      warning that lists them (synchronised batch norm needs CUDA; on one process it is BN).
    * ``cfg.sync_bn`` (convert every BN to SyncBN) and ``AmpOptimWrapper`` raise ``ValueError``:
      they cannot run on CPU and silently dropping them would change the experiment.

    Args:
        cfg (mmengine.Config | dict): The config (``launcher`` is read from it, default 'none').

    Returns:
        The same config object.
    """
    if not is_cpu_only():
        return cfg

    if cfg.get('env_cfg') is None:
        cfg['env_cfg'] = dict()
    if cfg['env_cfg'].get('dist_cfg') is None:
        cfg['env_cfg']['dist_cfg'] = dict()
    dist_cfg = cfg['env_cfg']['dist_cfg']
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
        if cfg.get('launcher', 'none') not in (None, 'none'):
            _log('No CUDA device: distributed backend "gloo" (env_cfg.dist_cfg.backend).')

    if cfg.get('sync_bn') is not None:
        raise ValueError(
            f'cfg.sync_bn={cfg.get("sync_bn")!r} converts BatchNorm layers to SyncBatchNorm, '
            'which only runs on CUDA devices, but this machine has none. Remove `sync_bn` from '
            'the config (or pass --cfg-options sync_bn=None) to train on CPU.')

    optim_wrapper = cfg.get('optim_wrapper') or {}
    if isinstance(optim_wrapper, dict) and optim_wrapper.get('type') == 'AmpOptimWrapper':
        raise ValueError(
            'optim_wrapper.type is "AmpOptimWrapper" (automatic mixed precision), which needs a '
            'CUDA device, but this machine has none. Use type="OptimWrapper" (and drop --amp) to '
            'train on CPU.')

    found: List[str] = []
    if cfg.get('model') is not None:
        _replace_sync_bn(cfg['model'], 'model', found)
    if found:
        _log('No CUDA device: SyncBN only runs on CUDA, so these norm layers use BN instead: '
             + ', '.join(found), level=logging.WARNING)

    launcher = cfg.get('launcher', 'none') or 'none'
    if launcher != 'none':
        wrapper = cfg.get('model_wrapper_cfg')
        if wrapper is None:
            cfg['model_wrapper_cfg'] = dict(
                type='CPUDistributedDataParallel',
                broadcast_buffers=False,
                find_unused_parameters=cfg.get('find_unused_parameters', False))
        else:
            wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
            if wrapper_type not in _DDP_WRAPPER_TYPES:
                raise ValueError(
                    f'model_wrapper_cfg.type={wrapper_type!r} is not supported on a machine '
                    'without CUDA; use MMDistributedDataParallel (or remove model_wrapper_cfg) '
                    'for distributed CPU training.')
            bad = [k for k in ('device_ids', 'output_device') if wrapper.get(k) is not None]
            if bad:
                raise ValueError(
                    f'model_wrapper_cfg sets {", ".join(bad)}, which torch only accepts for GPU '
                    'modules; remove them for distributed CPU training.')
            wrapper['type'] = 'CPUDistributedDataParallel'
    return cfg
