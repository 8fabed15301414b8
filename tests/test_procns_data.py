"""Sparse-label data: generators, loading / validation errors, datasets, freeze tool, h5
converter."""
import copy
import importlib.util
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from PIL import Image

from protocal.datasets.sparse_label_generators import (block_labels, point_labels,
                                                       scribble_labels)
from protocal.datasets.transforms.sparse_sampling import sparse_rng
from protocal.datasets.transforms.sparse_seg_labels import (GenerateSparseLabels,
                                                            LoadSparseSegAnnotations,
                                                            SparseSegRandomCrop)

DEMO = 'data/demo/dsb2018_nuclei'
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(name):
    path = osp.join(ROOT, 'tools', 'dataset_converters', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'protocal_tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _instances():
    inst = np.zeros((40, 48), np.int32)
    inst[5:15, 5:15] = 1
    inst[5:15, 15:25] = 2  # touches object 1
    inst[25:35, 30:44] = 7
    return inst


def test_point_labels_one_click_per_object_inside_it():
    inst = _instances()
    sem = (inst > 0).astype(np.uint8)
    out = point_labels(sem, sparse_rng(0, 'a.png'), 2, instances=inst, radius=0, margin=1)
    fg = out == 1
    assert sorted(np.unique(inst[fg]).tolist()) == [1, 2, 7]
    assert fg.sum() == 3  # one pixel per object with radius 0
    assert (sem[out == 0] == 0).all() and (out == 0).sum() == 3  # 'match' background clicks
    # disks stay inside their own object, even for touching objects
    out = point_labels(sem, sparse_rng(0, 'a.png'), 2, instances=inst, radius=3)
    for obj in (1, 2, 7):
        labelled_objects = np.unique(inst[(out == 1) & (inst == obj)])
        assert labelled_objects.tolist() == [obj]
    # deterministic per (seed, name), different for another seed
    again = point_labels(sem, sparse_rng(0, 'a.png'), 2, instances=inst, radius=3)
    other = point_labels(sem, sparse_rng(1, 'a.png'), 2, instances=inst, radius=3)
    assert np.array_equal(out, again) and not np.array_equal(out, other)


def test_scribble_and_block_labels_stay_in_their_class():
    sem = np.zeros((64, 64), np.uint8)
    sem[10:50, 12:52] = 1
    for fn in (scribble_labels, block_labels):
        out = fn(sem, sparse_rng(0, 'x'), 2)
        assert set(np.unique(out).tolist()) == {0, 1, 255}
        for cls in (0, 1):
            assert (sem[out == cls] == cls).all()
        assert (out != 255).mean() < 0.5  # sparse
    blocks = block_labels(sem, sparse_rng(0, 'x'), 2, block_ratio=0.25)
    ys, xs = np.nonzero(blocks == 1)
    assert ys.max() - ys.min() == xs.max() - xs.min()  # a square


def _write(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def _results(tmp_path, mask, image_hw=(8, 8), sparse=None):
    img = np.zeros((*image_hw, 3), np.uint8)
    res = dict(img=img, img_path=str(tmp_path / 'img.png'),
               seg_map_path=_write(tmp_path / 'mask.png', mask), seg_fields=[])
    if sparse is not None:
        res['sparse_map_path'] = _write(tmp_path / 'sparse.png', sparse)
    return res


def test_load_errors_name_file_and_values(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0] = 5
    mask[0, 1] = 7
    load = LoadSparseSegAnnotations(num_classes=2, target='full', mask_mode='semantic')
    with pytest.raises(ValueError, match=r'mask\.png.*\[5, 7\]'):
        load(_results(tmp_path, mask))
    with pytest.raises(ValueError, match=r'mask\.png.*size'):
        load(_results(tmp_path, np.zeros((6, 8), np.uint8)))
    sparse = np.full((8, 8), 255, np.uint8)
    sparse[1, 1] = 3
    load_sparse = LoadSparseSegAnnotations(num_classes=2, target='sparse', mask_mode='semantic')
    with pytest.raises(ValueError, match=r'sparse\.png.*\[3\]'):
        load_sparse(_results(tmp_path, np.zeros((8, 8), np.uint8), sparse=sparse))
    # value_map for raw grey levels
    raw = np.zeros((8, 8), np.uint8)
    raw[2:4] = 200
    mapped = LoadSparseSegAnnotations(2, 'full', 'semantic', value_map={0: 0, 200: 1})(
        _results(tmp_path, raw))
    assert mapped['gt_seg_map'].max() == 1


def test_empty_sparse_map_is_counted_and_allowed(tmp_path):
    sparse = np.full((8, 8), 255, np.uint8)
    res = LoadSparseSegAnnotations(2, 'sparse', 'semantic')(
        _results(tmp_path, np.zeros((8, 8), np.uint8), sparse=sparse))
    before = GenerateSparseLabels.num_empty
    with pytest.warns(UserWarning, match='no labelled pixel'):
        out = GenerateSparseLabels('point', 2)(res)
    assert GenerateSparseLabels.num_empty == before + 1
    assert (out['gt_seg_map'] == 255).all() and 'gt_full_seg' not in out


def test_generator_removes_ground_truth_and_crop_records_box(tmp_path):
    mask = np.zeros((40, 48), np.uint16)
    mask[5:15, 5:15] = 3
    res = LoadSparseSegAnnotations(2, 'sparse', 'instance')(_results(tmp_path, mask, (40, 48)))
    res['sample_id'] = 'tile'
    out = GenerateSparseLabels('point', 2, seed=0)(res)
    assert 'gt_full_seg' not in out and 'gt_instance_map' not in out
    assert (out['gt_seg_map'] == 1).any()
    np.random.seed(0)
    cropped = SparseSegRandomCrop((16, 64))(copy.deepcopy(out))
    y1, y2, x1, x2 = cropped['crop_box']
    assert (y2 - y1, x2 - x1) == (16, 48) and cropped['img_shape'] == (16, 48)
    assert np.array_equal(cropped['gt_seg_map'], out['gt_seg_map'][y1:y2, x1:x2])


def _demo_dataset(pipeline, **kwargs):
    from mmseg.registry import DATASETS
    cfg = dict(type='SparseSegDataset', data_root=DEMO, img_template='images/train/{id}.png',
               mask_template='masks/train/{id}.png', pipeline=pipeline,
               metainfo=dict(classes=('background', 'nucleus')))
    cfg.update(kwargs)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg)


PIPE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=2, target='sparse', mask_mode='instance'),
    dict(type='GenerateSparseLabels', kind='point', num_classes=2, seed=0, radius=2),
]


def test_dataset_discovery_split_files_and_errors(tmp_path):
    ds = _demo_dataset(PIPE)
    assert len(ds) == 1 and ds[0]['sample_id'] == '65c8527c16a0'
    assert ds[0]['gt_seg_map'].shape == ds[0]['img'].shape[:2]
    split = tmp_path / 'split.txt'
    split.write_text('# comment\n65c8527c16a0\tvol1\n')
    ds = _demo_dataset(PIPE, ann_file=str(split))
    assert ds.get_data_info(0)['volume_id'] == 'vol1'
    split.write_text('missing_tile\n')
    with pytest.raises(FileNotFoundError, match='missing_tile'):
        _demo_dataset(PIPE, ann_file=str(split))
    with pytest.raises(KeyError, match='split='):
        _demo_dataset(PIPE, ann_file='../../real/splits/dsb2018_he_random.json')


def test_freeze_tool_round_trip(tmp_path):
    from mmengine.config import Config
    freeze = load_tool('freeze_sparse_seg_labels').freeze
    cfg = Config.fromfile('configs/procns/procns_unet_demo-cpu_dsb2018-nuclei_point.py')
    assert freeze(cfg, str(tmp_path)) == 1
    assert osp.isfile(tmp_path / 'manifest.csv')
    frozen = np.array(Image.open(tmp_path / '65c8527c16a0.png'))
    live = _demo_dataset(PIPE)[0]['gt_seg_map']
    assert np.array_equal(frozen, live)
    # reading the frozen file back: a different generator seed does not change it
    pipe = copy.deepcopy(PIPE)
    pipe[2]['seed'] = 5
    back = _demo_dataset(pipe, sparse_template=str(tmp_path / '{id}.png'))[0]['gt_seg_map']
    assert np.array_equal(back, frozen)


def test_h5_converter(tmp_path):
    h5py = pytest.importorskip('h5py')
    convert = load_tool('procns_h5_to_folder').convert
    src = tmp_path / 'h5'
    src.mkdir()
    image = np.linspace(0, 1, 3 * 6 * 8).reshape(3, 6, 8)
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:6] = 1
    block = np.full((6, 8), 2, np.uint8)
    block[2:4, 3:5] = 1
    block[0, 0] = 0
    with h5py.File(src / 'case1.h5', 'w') as f:
        f['image'], f['mask'], f['block'] = image, mask, block
    stems = convert(str(src), str(tmp_path / 'out'), 'block', 2, 'train')
    assert stems == ['case1']
    sparse = np.array(Image.open(tmp_path / 'out/case1/sparse_block.png'))
    assert sparse[0, 0] == 0 and sparse[2, 3] == 1 and sparse[5, 7] == 255
    assert np.array(Image.open(tmp_path / 'out/case1/image.png')).shape == (6, 8, 3)
    with h5py.File(src / 'case2.h5', 'w') as f:
        f['image'], f['mask'], f['block'] = image, mask, np.full((6, 8), 4, np.uint8)
    with pytest.raises(ValueError, match=r'case2\.h5.*\[4\]'):
        convert(str(src), str(tmp_path / 'out2'), 'block', 2, 'train')
