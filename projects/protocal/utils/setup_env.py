"""Pre-flight checks shared by ``tools/train.py`` and ``tools/test.py``.

They run before the runner is built, so a wrong path fails in a second with a message that
names the config field and the fix, instead of after model construction deep inside a dataset.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Iterator, Sequence, Tuple

__all__ = [
    'iter_data_roots', 'check_data_roots', 'check_file_exists', 'default_work_dir', 'build_runner'
]

DATASETS_DOC = 'docs/datasets.md'


def check_file_exists(path: str, what: str, allow_remote: bool = False) -> str:
    """Return ``path`` if it is an existing file, else raise ``FileNotFoundError``.

    Args:
        path (str): File to check (``~`` is expanded).
        what (str): What the file is, used in the message (e.g. ``'config file'``).
        allow_remote (bool): Accept URIs such as ``https://...`` unchecked (mmengine downloads
            checkpoints itself). Defaults to False.
    """
    if allow_remote and '://' in path:
        return path
    full = osp.expanduser(path)
    if not osp.isfile(full):
        hint = ' (it is a directory)' if osp.isdir(full) else ''
        raise FileNotFoundError(f'{what} not found: {path!r}{hint}')
    return full


def default_work_dir(config_path: str) -> str:
    """``work_dirs/<config file stem>``, the OpenMMLab default work directory."""
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def iter_data_roots(dataset_cfg: Any, path: str) -> Iterator[Tuple[str, str]]:
    """Yield ``(config_path, data_root)`` for a dataset config and the datasets it wraps.

    Follows ``dataset`` (``RepeatDataset``, ``ClassBalancedDataset``, ...) and ``datasets``
    (``ConcatDataset``) keys. Remote roots (``s3://...``) are skipped.
    """
    if not isinstance(dataset_cfg, dict):
        return
    root = dataset_cfg.get('data_root')
    if isinstance(root, str) and root and '://' not in root:
        yield f'{path}.data_root', root
    inner = dataset_cfg.get('dataset')
    if inner is not None:
        yield from iter_data_roots(inner, f'{path}.dataset')
    for i, sub in enumerate(dataset_cfg.get('datasets') or ()):
        yield from iter_data_roots(sub, f'{path}.datasets[{i}]')


def check_data_roots(cfg: Any, dataloader_keys: Sequence[str]) -> None:
    """Raise ``FileNotFoundError`` naming the first missing ``data_root`` of the given loaders.

    The message names the config field and the resolved path and, when the dataset class knows
    its on-disk layout (protocal's point datasets do), shows the expected folder tree.

    Args:
        cfg (mmengine.Config | dict): Full config.
        dataloader_keys (Sequence[str]): e.g. ``('train_dataloader', 'val_dataloader')``;
            keys that are absent or ``None`` are skipped.
    """
    for key in dataloader_keys:
        loader = cfg.get(key)
        if not isinstance(loader, dict):
            continue
        for field, root in iter_data_roots(loader.get('dataset'), f'{key}.dataset'):
            if not osp.isdir(osp.expanduser(root)):
                message = (f'{field} = {root!r} does not exist (resolved to '
                           f'{osp.abspath(osp.expanduser(root))!r}). Prepare the dataset as '
                           f'described in {DATASETS_DOC}, or point the config at it with '
                           f'--cfg-options {field}=/path/to/data')
                layout = _layout_of(cfg, loader.get('dataset'), root)
                raise FileNotFoundError(message + (f'\n{layout}' if layout else ''))


def _layout_of(cfg: Any, dataset_cfg: Any, root: str) -> str:
    """The dataset's own description of its expected layout, or ``''``.

    Builds the (innermost) dataset whose ``data_root`` is ``root`` without a pipeline: protocal's
    datasets validate their folders at construction and explain the layout they expected.
    """
    while isinstance(dataset_cfg, dict) and dataset_cfg.get('data_root') != root:
        dataset_cfg = dataset_cfg.get('dataset')
    if not isinstance(dataset_cfg, dict):
        return ''
    try:
        from mmengine.registry import DATASETS, init_default_scope

        # the root registry resolves the config's scope (mmdet point datasets, mmseg datasets)
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        DATASETS.build(dict(dataset_cfg, pipeline=[]))
    except FileNotFoundError as err:
        text = str(err)
        return text[text.index('Expected'):] if 'Expected' in text else ''
    except Exception:  # noqa: BLE001 - best effort: the generic message is still raised
        return ''
    return ''




def build_runner(cfg: Any):
    """The config's runner: ``runner_type`` from mmengine's ``RUNNERS`` if set, else ``Runner``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
