"""Packing point annotations into MMDetection data samples."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from .geometric import get_image, get_points

__all__ = ['PackPointDetInputs']


@TRANSFORMS.register_module()
class PackPointDetInputs(BaseTransform):
    """Pack the image and its point annotations for a point detector.

    Returns ``dict(inputs, data_samples)``:

    * ``inputs``: the image as a ``(C, H, W)`` tensor of its own dtype (uint8 for loaded images);
    * ``data_samples``: a :class:`mmdet.structures.DetDataSample` whose ``gt_instances``
      (:class:`InstanceData`) always exists, with ``points`` float32 ``(N, 2)``, ``labels`` int64
      ``(N,)`` and ``annotated`` bool ``(N,)`` (all True when ``gt_points_annotated`` is absent). It
      is empty (``N = 0``) when the results carry no ``gt_points``, e.g. at inference. The meta
      information holds the ``meta_keys`` that are present in the results.

    Args:
        meta_keys: result keys copied into the data sample's metainfo when present.
    """

    def __init__(self,
                 meta_keys: Sequence[str] = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                                             'scale_factor', 'flip', 'flip_direction',
                                             'mpp')) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = get_image(results, 'PackPointDetInputs')
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))

        points = get_points(results, 'PackPointDetInputs')
        if points is None:
            points = np.zeros((0, 2), dtype=np.float32)
            labels = np.zeros(0, dtype=np.int64)
        else:
            if results.get('gt_points_labels') is None:
                where = f" (img_path={results['img_path']!r})" if 'img_path' in results else ''
                raise KeyError(f'PackPointDetInputs: gt_points given without gt_points_labels'
                               f'{where}')
            labels = np.asarray(results['gt_points_labels'])
            if labels.size and not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f'PackPointDetInputs: gt_points_labels must be integers, got '
                                 f'{labels.dtype}')
        annotated = results.get('gt_points_annotated')
        annotated = (np.ones(len(points), dtype=bool)
                     if annotated is None else np.asarray(annotated, dtype=bool))

        gt_instances = InstanceData()
        gt_instances.points = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        gt_instances.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        gt_instances.annotated = torch.from_numpy(np.ascontiguousarray(annotated))

        data_sample = DetDataSample()
        data_sample.gt_instances = gt_instances
        data_sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        return dict(inputs=inputs, data_samples=data_sample)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(meta_keys={self.meta_keys})'
