"""Build a point detector from a config + checkpoint and run it on images."""
import copy
import os.path as osp
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

__all__ = [
    'init_point_detector', 'inference_point_detector', 'build_test_split_dataset', 'list_images',
    'test_metric_cfg', 'IMAGE_SUFFIXES'
]

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
#: pipeline steps that need annotations and are dropped at inference
_TRAIN_ONLY = ('SparsePointSampling', 'PointRandomFlip', 'PointRandomRotate90', 'PointRandomCrop')


def init_point_detector(config: Union[str, Path, Config],
                        checkpoint: Optional[str] = None,
                        device: str = 'cpu',
                        cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build a :class:`PointDetector` in eval mode.

    ``model.dataset_meta`` holds the ``classes`` (and ``palette`` when known) saved in the
    checkpoint, else those of the config's dataloaders.

    Args:
        config: config path or object.
        checkpoint: local checkpoint path (``None``: random weights, for smoke tests only).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        cfg_options: overrides merged into the config (e.g. ``{'model.test_cfg.mode': 'slide'}``).
    """
    import protocal  # noqa: F401  (registers everything)
    from mmdet.registry import MODELS
    if not isinstance(config, Config):
        if not osp.isfile(str(config)):
            raise FileNotFoundError(f'config file not found: {config}')
        config = Config.fromfile(str(config))
    if cfg_options:
        config.merge_from_dict(cfg_options)
    init_default_scope(config.get('default_scope', 'mmdet'))
    model = MODELS.build(config.model)
    model.cfg = config
    saved_meta = {}
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
        ckpt = load_checkpoint(model, checkpoint, map_location='cpu')
        saved_meta = ckpt.get('meta', {}).get('dataset_meta') or {}
    classes = saved_meta.get('classes') or _metainfo_from_config(config, 'classes') or [
        f'class_{i}' for i in range(config.model.head.num_classes)
    ]
    model.dataset_meta = dict(classes=tuple(classes))
    palette = saved_meta.get('palette') or _metainfo_from_config(config, 'palette')
    if palette:
        model.dataset_meta['palette'] = [tuple(c) for c in palette]
    return model.to(device).eval()


def build_test_split_dataset(cfg: Config, split: str, **overrides):
    """The config's test dataset on another ``split`` (a split-file dataset), without a pipeline
    change: ``overrides`` (e.g. ``sparse_ratio``, ``sparse_seed``) are set on the dataset config.
    Used by the analysis tools that walk a split with a trained model."""
    from mmdet.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.update(split=split, test_mode=True, **overrides)
    return DATASETS.build(ds_cfg)


def test_metric_cfg(cfg: Config) -> dict:
    """The config's (first) test metric: ``test_evaluator``, or its first entry when a list."""
    evaluator = cfg.test_evaluator
    return evaluator[0] if isinstance(evaluator, (list, tuple)) else evaluator


def _metainfo_from_config(config: Config, field: str):
    """``metainfo[field]`` of the first dataloader of the config that sets it, else ``None``."""
    for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        dataset = config.get(key, {}).get('dataset', {})
        value = dataset.get('metainfo', {}).get(field)
        if value:
            return value
    return None


def _inference_pipeline(config: Config) -> Compose:
    pipeline = copy.deepcopy(config.test_dataloader.dataset.pipeline)
    return Compose([step for step in pipeline if step['type'] not in _TRAIN_ONLY])


@torch.no_grad()
def inference_point_detector(model: torch.nn.Module,
                             images: Sequence[Union[str, np.ndarray]],
                             batch_size: int = 1) -> List:
    """Predict points on images (paths or HxWx3 BGR uint8 arrays).

    Returns one ``DetDataSample`` per image with ``pred_instances`` (points in the original
    image's pixels, labels, scores) and ``pred_heatmap`` when the model's ``test_cfg`` asks for it.
    """
    pipeline = _inference_pipeline(model.cfg)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = []
        for i, image in enumerate(images[start:start + batch_size]):
            if isinstance(image, np.ndarray):
                results = dict(img=image, img_path=None, img_id=start + i,
                               img_shape=image.shape[:2], ori_shape=image.shape[:2])
                steps = [t for t in pipeline.transforms
                         if type(t).__name__ != 'LoadHistologyImage']
                for step in steps:
                    results = step(results)
            else:
                results = pipeline(dict(img_path=str(image), img_id=start + i))
            batch.append(results)
        outputs.extend(model.test_step(pseudo_collate(batch)))
    return outputs


def list_images(path: Union[str, Path]) -> List[Path]:
    """An image file, or the images of a folder (sorted); clear error when there are none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f'input not found: {path} (expected an image file or a folder)')
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) found in {path}')
    return files
