"""`import protocal` registers every public part in the MMDetection registries."""
import pytest

import protocal  # noqa: F401

EXPECTED = {
    'MODELS': [
        'PointDetector', 'HeatmapPointHead', 'ViGHeatmapPointHead', 'IsotropicViG',
        'SoftCrossEntropyLoss', 'SemanticEnergyLoss', 'PrototypeCalibratedLoss',
        'StretchedFeatureLoss', 'ExclusiveLoss'
    ],
    'DATASETS': ['PointDataset', 'OCELOTCellDataset', 'Her2PointDataset'],
    'TRANSFORMS': [
        'LoadHistologyImage', 'SparsePointSampling', 'PointRandomFlip', 'PointRandomRotate90',
        'PointRandomCrop', 'PointResize', 'PackPointDetInputs'
    ],
    'TASK_UTILS': ['PointHeatmapCodec'],
    'METRICS': ['PointF1Metric'],
    'VISUALIZERS': ['PointDetLocalVisualizer'],
}
CASES = [(registry, name) for registry, names in EXPECTED.items() for name in names]


@pytest.mark.parametrize('registry_name, name', CASES, ids=[f'{r}.{n}' for r, n in CASES])
def test_registered_in_mmdet(registry_name, name):
    import mmdet.registry
    registry = getattr(mmdet.registry, registry_name)
    # registered in the mmdet registry itself (not only reachable through a parent)
    assert name in registry.module_dict, f'{name} is not registered in mmdet {registry_name}'
    cls = registry.get(name)
    assert cls.__module__.startswith('protocal.'), (name, cls.__module__)


def test_cpu_ddp_wrapper_registered():
    from mmengine.registry import MODEL_WRAPPERS
    assert MODEL_WRAPPERS.get('CPUDistributedDataParallel') is \
        protocal.utils.CPUDistributedDataParallel
