"""WSSS datasets (BCSS-WSSS, CSV, class folders), mask loading and the BCSS-WSSS checker."""
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from protocal.datasets.transforms.wsss import LoadWSSSAnnotations, PackWSSSInputs
from protocal.datasets.wsss import (BCSSWSSSDataset, ImageLabelCSVDataset,
                                    ImageLabelFolderDataset, parse_label_code)

EBHI_CLASSES = ('Adenocarcinoma', 'High-grade IN', 'Low-grade IN', 'Normal', 'Polyp',
                'Serrated adenoma', 'Background')

@pytest.fixture(autouse=True)
def _mmseg_scope():
    """LPD parts live in the mmseg registries (the shared conftest selects mmdet)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    yield



def _png(path, arr, palette=False):
    os.makedirs(osp.dirname(path), exist_ok=True)
    if palette:  # index mask with the BCSS-WSSS palette
        img = Image.frombytes('P', arr.shape[::-1], np.ascontiguousarray(arr).tobytes())
        img.putpalette([205, 51, 51, 0, 255, 0, 65, 105, 225, 255, 165, 0, 255, 255, 255])
    else:
        img = Image.fromarray(arr)
    img.save(path)


def _bcss(root, val_name='val', bad_mask=False, size=16):
    rgb = np.full((size, size, 3), 200, np.uint8)
    for name in ('P1_0_0[1101].png', 'P1_0_1[0010].png'):
        _png(osp.join(root, 'train', name), rgb)
    for split in (val_name, 'test'):
        mask = np.zeros((size, size), np.uint8)
        mask[:, size // 2:] = 4
        mask[0, 0] = 2
        if bad_mask and split == 'test':
            mask[1, 1] = 7
        _png(osp.join(root, split, 'img', 'a.png'), rgb)
        _png(osp.join(root, split, 'mask', 'a.png'), mask, palette=True)
    return root


def test_parse_label_code():
    assert parse_label_code('/x/y/P_1_2[1101].png', 4).tolist() == [1, 1, 0, 1]
    assert parse_label_code('/dir[with]/P_1_2[0 1 0 1].png', 4).tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r'P_1\.png: no image-level label code'):
        parse_label_code('/d/P_1.png', 4)
    with pytest.raises(ValueError, match=r'P\[11x1\]\.png.*does not parse'):
        parse_label_code('P[11x1].png', 4)
    with pytest.raises(ValueError, match=r'P\[110\]\.png.*3 digits, expected 4'):
        parse_label_code('P[110].png', 4)


def test_bcss_wsss_train_val_test(tmp_path):
    root = _bcss(str(tmp_path / 'BCSS-WSSS'), val_name='val')
    train = BCSSWSSSDataset(data_root=root, split='train', pipeline=[])
    assert len(train) == 2 and train.metainfo['classes'][-1] == 'BACK'
    assert train[0]['gt_cls_label'].tolist() == [1, 1, 0, 1]
    # the release names the folder val/, the LPD code valid/: both split names find it
    for split in ('val', 'valid'):
        ds = BCSSWSSSDataset(data_root=root, split=split, pipeline=[
            dict(type='LoadWSSSAnnotations'), dict(type='PackWSSSInputs')])
        info = ds.get_data_info(0)
        assert info['seg_map_path'].endswith(osp.join('val', 'mask', 'a.png'))
    sample = ds[0]['data_samples']
    assert sample.gt_cls_label.tolist() == [1, 0, 1, 0]  # derived from the mask (0, 2 present)
    assert set(np.unique(sample.gt_sem_seg.data.numpy())) == {0, 2, 4}
    os.makedirs(osp.join(root, 'valid', 'img'))
    with pytest.raises(ValueError, match='both val/ and valid/'):
        BCSSWSSSDataset(data_root=root, split='val', pipeline=[])


def test_bcss_bad_inputs(tmp_path):
    root = _bcss(str(tmp_path / 'b'), bad_mask=True)
    test = BCSSWSSSDataset(data_root=root, split='test',
                           pipeline=[dict(type='LoadWSSSAnnotations')])
    with pytest.raises(ValueError, match=r'test/mask/a\.png: mask values \{7\} are outside'):
        test[0]
    _png(osp.join(root, 'train', 'P2_0_0[0000].png'), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r'P2_0_0\[0000\]\.png: the image-level label has no'):
        BCSSWSSSDataset(data_root=root, split='train', pipeline=[])
    with pytest.warns(UserWarning, match='skipped 1 image'):
        ds = BCSSWSSSDataset(data_root=root, split='train', pipeline=[], on_empty_label='skip')
    assert len(ds) == 2
    _png(osp.join(root, 'train', 'P3_0_0[10].png'), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r'P3_0_0\[10\]\.png.*2 digits, expected 4'):
        BCSSWSSSDataset(data_root=root, split='train', pipeline=[], on_empty_label='skip')
    with pytest.raises(FileNotFoundError, match='Expected BCSS-WSSS layout'):
        BCSSWSSSDataset(data_root=str(tmp_path / 'nothing'), split='test', pipeline=[])


def _checker():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'check_bcss_wsss', 'tools/dataset_converters/check_bcss_wsss.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bcss_checker_tool(tmp_path, capsys):
    checker = _checker()
    root = _bcss(str(tmp_path / 'c'), val_name='valid', size=224)
    assert checker.main([root]) == 0
    out = capsys.readouterr().out
    assert 'TUM  in      1 patches' in out and 'valid/' in out
    assert '4=BACK pixels  50.0%' in out
    _png(osp.join(root, 'train', 'bad[12].png'), np.zeros((224, 224, 3), np.uint8))
    mask = np.full((224, 224), 9, np.uint8)
    _png(osp.join(root, 'test', 'mask', 'a.png'), mask, palette=True)
    assert checker.main([root]) == 1
    out = capsys.readouterr().out
    assert 'bad[12].png' in out and 'mask values [9]' in out


def test_folder_dataset_on_bundled_ebhi():
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadWSSSAnnotations', mask_mode='binary', threshold=128),
                dict(type='PackWSSSInputs')]
    ds = ImageLabelFolderDataset(data_root='data/real/ebhi_seg', metainfo=dict(
        classes=EBHI_CLASSES), split_file='data/real/splits/ebhi_seg_test.txt', pipeline=pipeline)
    assert len(ds) == 6
    out = ds[0]
    sample = out['data_samples']
    label = sample.gt_cls_label
    assert label.sum() == 1
    cls = int(label.argmax())
    values = set(np.unique(sample.gt_sem_seg.data.numpy()).tolist())
    assert values <= {cls, 6} and cls in values
    raw = np.array(Image.open(ds.get_data_info(0)['seg_map_path']))
    fg = (sample.gt_sem_seg.data[0].numpy() == cls)
    assert np.array_equal(fg, raw >= 128)
    # train split without masks (image-level labels only)
    train = ImageLabelFolderDataset(data_root='data/real/ebhi_seg', metainfo=dict(
        classes=EBHI_CLASSES), split_file='data/real/splits/ebhi_seg_train.txt', mask_name=None,
        pipeline=[])
    assert len(train) == 24 and 'seg_map_path' not in train.get_data_info(0)


def test_splits_are_case_disjoint():
    import csv
    cases = {f"{r['class']}/{r['stem']}": r['case_id']
             for r in csv.DictReader(open('data/real/ebhi_seg/manifest.csv'))}
    got = {}
    for split in ('train', 'val', 'test'):
        lines = [ln.strip() for ln in open(f'data/real/splits/ebhi_seg_{split}.txt')
                 if ln.strip() and not ln.startswith('#')]
        got[split] = {cases[ln] for ln in lines}
    assert not (got['train'] & got['test']) and not (got['train'] & got['val'])
    assert not (got['val'] & got['test'])


def test_folder_and_csv_bad_inputs(tmp_path):
    root = str(tmp_path / 'f')
    _png(osp.join(root, 'A', 's1', 'image.png'), np.zeros((8, 8, 3), np.uint8))
    _png(osp.join(root, 'A', 's1', 'mask.png'), np.full((8, 8), 3, np.uint8))
    _png(osp.join(root, 'Z', 's2', 'image.png'), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"folder 'Z' is not a class"):
        ImageLabelFolderDataset(data_root=root, metainfo=dict(classes=('A', 'B', 'bg')),
                                pipeline=[])
    ds = ImageLabelFolderDataset(data_root=root, metainfo=dict(classes=('A', 'Z', 'bg')),
                                 pipeline=[dict(type='LoadWSSSAnnotations', mask_mode='index')])
    with pytest.raises(ValueError, match=r's1/mask\.png: mask values \{3\} are outside'):
        ds[0]
    csv_path = osp.join(root, 'labels.csv')
    with open(csv_path, 'w') as f:
        f.write('image,labels\nA/s1/image.png,A;Z\nZ/s2/image.png,10\n')
    ds = ImageLabelCSVDataset(data_root=root, ann_file='labels.csv',
                              metainfo=dict(classes=('A', 'Z', 'bg')), pipeline=[])
    assert [d['gt_cls_label'].tolist() for d in ds] == [[1, 1], [1, 0]]
    with open(csv_path, 'w') as f:
        f.write('image,labels\nA/s1/image.png,\n')
    with pytest.raises(ValueError, match='line 2.*no class'):
        ImageLabelCSVDataset(data_root=root, ann_file='labels.csv',
                             metainfo=dict(classes=('A', 'Z', 'bg')), pipeline=[])
    with open(csv_path, 'w') as f:
        f.write('image,labels\nA/s1/image.png,Q\n')
    with pytest.raises(ValueError, match="line 2: unknown class 'Q'"):
        ImageLabelCSVDataset(data_root=root, ann_file='labels.csv',
                             metainfo=dict(classes=('A', 'Z', 'bg')), pipeline=[])


def test_binary_mask_needs_one_class():
    t = LoadWSSSAnnotations(mask_mode='binary')
    with pytest.raises(ValueError, match='exactly one image-level class'):
        t(dict(seg_map_path='data/real/ebhi_seg/Normal/' +
               sorted(os.listdir('data/real/ebhi_seg/Normal'))[0] + '/mask.png',
               bg_index=6, gt_cls_label=np.array([1, 1, 0, 0, 0, 0])))
    packed = PackWSSSInputs()(dict(img=np.zeros((4, 4, 3), np.uint8),
                                   gt_cls_label=np.array([0, 1])))
    assert packed['data_samples'].gt_cls_label.tolist() == [0.0, 1.0]
