"""Real expert-point data (issue 10): converters, tile-folder datasets, split files, bad input."""
import csv
import importlib.util
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from PIL import Image

import protocal  # noqa: F401
from protocal.datasets import (CropToValidRegion, DSB2018PointDataset, EndoNukePointDataset,
                               read_split_ids)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ENDO = osp.join(ROOT, 'data', 'real', 'endonuke')
DSB = osp.join(ROOT, 'data', 'real', 'dsb2018_he')
SPLITS = osp.join(ROOT, 'data', 'real', 'splits')


def load_tool(name, folder='dataset_converters'):
    path = osp.join(ROOT, 'tools', folder, name + '.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def published_endonuke(src_dir, out_dir, ids, rgba_rows=0):
    """Write bundled EndoNuke tiles back in the published layout (images/ + labels/*.txt)."""
    os.makedirs(osp.join(out_dir, 'images'))
    os.makedirs(osp.join(out_dir, 'labels'))
    names = ('stroma', 'epithelium', 'other')
    for tid in ids:
        rgb = np.array(Image.open(osp.join(src_dir, tid, 'image.png')))
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        if rgba_rows:
            alpha[-rgba_rows:] = 0
            rgb[-rgba_rows:] = 0
        Image.fromarray(np.dstack([rgb, alpha])).save(osp.join(out_dir, 'images', f'{tid}.png'))
        with open(osp.join(out_dir, 'labels', f'{tid}.txt'), 'w') as f:
            for r in read_rows(osp.join(src_dir, tid, 'points.csv')):
                f.write(f"{r['x']} {r['y']} {names.index(r['class'])}\n")


# --------------------------------------------------------------------------------- EndoNuke
def test_endonuke_published_roundtrip(tmp_path):
    conv = load_tool('endonuke_to_points')
    ids = ['741', '1010', '1580']
    published_endonuke(ENDO, tmp_path / 'pub', ids)
    totals = conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'out'), log=lambda *a: None)
    assert totals['tiles'] == 3
    manifest = {r['stem']: r for r in read_rows(ENDO + '/manifest.csv')}
    out = {r['stem']: r for r in read_rows(tmp_path / 'out' / 'manifest.csv')}
    for tid in ids:
        # points identical to the bundled ones, RGB pixels unchanged by the RGBA -> RGB step
        assert open(tmp_path / 'out' / tid / 'points.csv').read() == \
            open(osp.join(ENDO, tid, 'points.csv')).read()
        assert np.array_equal(np.array(Image.open(tmp_path / 'out' / tid / 'image.png')),
                              np.array(Image.open(osp.join(ENDO, tid, 'image.png'))))
        for k in ('n_stroma', 'n_epithelium', 'n_other', 'n_points'):
            assert out[tid][k] == manifest[tid][k]
    # blocks come from id gaps: 741 (A) < 1010 (B) < 1580 (C)
    assert [out[t]['id_block'] for t in ids] == ['A', 'B', 'C']


def test_endonuke_transparent_rows_and_points_there(tmp_path):
    conv = load_tool('endonuke_to_points')
    published_endonuke(ENDO, tmp_path / 'pub', ['1010'], rgba_rows=30)
    logs = []
    totals = conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'out'), log=logs.append)
    n_bottom = sum(float(r['y']) >= 170 for r in read_rows(ENDO + '/1010/points.csv'))
    assert n_bottom > 0 and totals['dropped_transparent'] == n_bottom
    assert any('1010.txt' in line and 'transparent' in line for line in logs)
    row = read_rows(tmp_path / 'out' / 'manifest.csv')[0]
    assert row['valid_height'] == '170' and row['transparent_px'] == str(30 * 200)
    with pytest.raises(conv.ConversionError, match='1010.txt'):
        conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'out2'), strict=True,
                     log=lambda *a: None)


def test_endonuke_bad_input(tmp_path):
    conv = load_tool('endonuke_to_points')
    published_endonuke(ENDO, tmp_path / 'pub', ['1010', '1014'])
    # label file without image: error naming the file, or a counted skip
    os.remove(tmp_path / 'pub' / 'images' / '1014.png')
    with pytest.raises(conv.ConversionError, match=r'1014\.txt: annotation without image'):
        conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o1'), log=lambda *a: None)
    logs = []
    totals = conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o2'), skip_unpaired=True,
                          log=logs.append)
    assert totals['tiles'] == 1 and totals['skipped_unpaired'] == 1
    assert any('skipped 1 tile' in line for line in logs)
    # unknown class id, malformed line, point outside the image
    lab = tmp_path / 'pub' / 'labels' / '1010.txt'
    good = lab.read_text()
    lab.write_text(good + '10 10 7\n')
    with pytest.raises(conv.ConversionError, match=r'1010\.txt, line \d+: unknown class id'):
        conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o3'), skip_unpaired=True,
                     log=lambda *a: None)
    lab.write_text(good + '10 ten 1\n')
    with pytest.raises(conv.ConversionError, match=r'1010\.txt, line \d+: expected numbers'):
        conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o4'), skip_unpaired=True,
                     log=lambda *a: None)
    lab.write_text(good + '250 10 0\n-3 5 1\n')
    logs = []
    totals = conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o5'), skip_unpaired=True,
                          log=logs.append)
    assert totals['dropped_outside'] == 2
    assert any('1010.txt: 2 point(s) outside the 200x200 image' in line for line in logs)
    with pytest.raises(FileNotFoundError, match='not an EndoNuke folder'):
        conv.convert(str(tmp_path), str(tmp_path / 'o6'), log=lambda *a: None)


def infos(ds):
    return [ds.get_data_info(i) for i in range(len(ds))]


def test_endonuke_dataset_split_sparse_and_crop():
    kw = dict(data_root=ENDO, split_file=osp.join(SPLITS, 'endonuke_block.json'))
    split = json.load(open(osp.join(SPLITS, 'endonuke_block.json')))
    test = EndoNukePointDataset(split='test', test_mode=True, **kw, pipeline=[])
    assert [d['img_id'] for d in infos(test)] == split['test']
    assert {d['tile_group'] for d in infos(test)} == {'D'}
    train = EndoNukePointDataset(split='train', sparse_ratio=0.1, **kw, pipeline=[])
    assert not set(split['train']) & set(split['test'])
    info = {d['img_id']: d for d in infos(train)}
    # tile 741: transparent bottom rows -> valid region 124 x 200
    assert info['741']['valid_hw'] == (124, 200)
    n = len(info['1014']['gt_points_labels'])
    assert info['1014']['sparse_frozen'] and \
        info['1014']['gt_points_annotated'].sum() == int(np.floor(0.1 * n + 0.5))
    # the single-class view annotates exactly the same points
    one = EndoNukePointDataset(
        split='train', sparse_ratio=0.1, metainfo=dict(classes=('nucleus', )),
        class_map=dict(stroma='nucleus', epithelium='nucleus', other='nucleus'), **kw,
        pipeline=[])
    for d1 in infos(one):
        d3 = info[d1['img_id']]
        assert np.array_equal(d1['gt_points_annotated'], d3['gt_points_annotated'])
        assert (d1['gt_points_labels'] == 0).all()
    # tiles are all called image.png: the subsets still differ between tiles
    patterns = {tuple(d['gt_points_annotated'][:12]) for d in infos(train)}
    assert len(patterns) > 5
    # CropToValidRegion removes the black rows
    results = dict(img=np.zeros((200, 200, 3), np.uint8), valid_hw=(124, 200),
                   gt_points=np.array([[5, 5], [5, 150]], np.float32),
                   gt_points_labels=np.array([0, 1]), gt_points_annotated=np.array([1, 1], bool))
    out = CropToValidRegion()(results)
    assert out['img'].shape == (124, 200, 3) and out['img_shape'] == (124, 200)
    assert len(out['gt_points']) == 1 and len(out['gt_points_labels']) == 1


def test_endonuke_dataset_bad_input(tmp_path):
    root = tmp_path / 'endo'
    for tid in ('1010', '1014'):
        shutil.copytree(osp.join(ENDO, tid), root / tid)
    (root / '1010' / 'points.csv').write_text('x,y,class\n5,5,stroma\n7,7,macrophage\n')
    with pytest.raises(ValueError, match=r"1010/points\.csv, line 3: unknown class 'macrophage'"):
        EndoNukePointDataset(data_root=str(root), split=None, pipeline=[])
    (root / '1010' / 'points.csv').write_text('x,y,class\n5,5,stroma\n500,7,stroma\n')
    ds = EndoNukePointDataset(data_root=str(root), split=None, pipeline=[])
    assert len(ds.get_data_info(0)['gt_points']) == 1  # outside point dropped, warned
    os.remove(root / '1014' / 'points.csv')
    with pytest.raises(FileNotFoundError, match=r'1014/points\.csv'):
        EndoNukePointDataset(data_root=str(root), split=None, pipeline=[])


# ----------------------------------------------------------------------------------- DSB2018
def test_dsb_published_roundtrip_and_bad_input(tmp_path):
    conv = load_tool('dsb2018_to_points')
    tid = '8f27ebc74164'
    full = tid + 'f' * 52
    labels = np.array(Image.open(osp.join(DSB, tid, 'labels.png')))
    sample = tmp_path / 'pub' / full
    os.makedirs(sample / 'images')
    os.makedirs(sample / 'masks')
    rgb = np.array(Image.open(osp.join(DSB, tid, 'image.png')))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(
        sample / 'images' / f'{full}.png')
    for lab in np.unique(labels[labels > 0]):
        Image.fromarray(((labels == lab) * 255).astype(np.uint8)).save(
            sample / 'masks' / f'm{lab:03d}.png')
    totals = conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'out'),
                          groups=osp.join(SPLITS, 'dsb2018_he_groups.csv'), log=lambda *a: None)
    assert totals['nuclei'] == len(np.unique(labels)) - 1
    assert open(tmp_path / 'out' / tid / 'centroids.csv').read() == \
        open(osp.join(DSB, tid, 'centroids.csv')).read()
    assert np.array_equal(np.array(Image.open(tmp_path / 'out' / tid / 'labels.png')), labels)
    row = read_rows(tmp_path / 'out' / 'manifest.csv')[0]
    assert row['group'] == 'pink_he' and row['full_id'] == full
    # overlapping and empty masks: counted, error with --strict; wrong size: error naming it
    Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(sample / 'masks' / 'z_all.png')
    Image.fromarray(np.zeros_like(labels, np.uint8)).save(sample / 'masks' / 'z_empty.png')
    logs = []
    totals = conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o2'), log=logs.append)
    assert totals['empty mask'] == 1 and totals['pixels claimed by two masks'] > 0
    with pytest.raises(conv.ConversionError, match='empty mask'):
        conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o3'), strict=True,
                     log=lambda *a: None)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(sample / 'masks' / 'z_small.png')
    with pytest.raises(conv.ConversionError, match=r'z_small\.png: mask is 10x10'):
        conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o4'), log=lambda *a: None)
    os.remove(sample / 'images' / f'{full}.png')
    with pytest.raises(conv.ConversionError, match='is missing'):
        conv.convert(str(tmp_path / 'pub'), str(tmp_path / 'o5'), log=lambda *a: None)


def test_dsb_dataset_and_partial_tile():
    kw = dict(data_root=DSB, pipeline=[])
    for name in ('dsb2018_he_group.json', 'dsb2018_he_random.json'):
        split = json.load(open(osp.join(SPLITS, name)))
        assert '8f27ebc74164' in split['train']
        assert '8f27ebc74164' not in split['val'] + split['test']
        ds = DSB2018PointDataset(split_file=osp.join(SPLITS, name), split='train', **kw)
        info = {d['img_id']: d for d in infos(ds)}
        assert info['8f27ebc74164']['partial_annotation']
        assert len(info['8f27ebc74164']['gt_points']) == 13
    group = json.load(open(osp.join(SPLITS, 'dsb2018_he_group.json')))
    groups = {r['id12']: r['group'] for r in read_rows(osp.join(DSB, 'manifest.csv'))}
    assert {groups[t] for t in group['test']} == {'white'}
    assert 'white' not in {groups[t] for t in group['train'] + group['val']}


# ------------------------------------------------------------------------------------ splits
def test_split_tool_defaults_are_reproducible(tmp_path, monkeypatch):
    tool = load_tool('make_real_splits')
    before = {n: open(osp.join(SPLITS, n)).read() for n in os.listdir(SPLITS)
              if n.endswith('.json')}
    monkeypatch.setattr(tool, 'DEFAULTS', [dict(d, out=str(tmp_path / osp.basename(d['out'])))
                                           for d in tool.DEFAULTS])
    tool.write_defaults(log=lambda *a: None)
    for name, text in before.items():
        assert open(tmp_path / name).read() == text, name
    endo = json.load(open(osp.join(SPLITS, 'endonuke_block.json')))
    # the tiles with the rare class "other" are all in train
    others = [r['stem'] for r in read_rows(osp.join(ENDO, 'manifest.csv')) if r['n_other'] != '0']
    assert set(others) <= set(endo['train'])
    assert tool.check_split(osp.join(SPLITS, 'endonuke_block.json'), ENDO)['test'] == 14


def test_split_file_bad_input(tmp_path):
    path = tmp_path / 's.json'
    path.write_text(json.dumps({'train': ['1010', '9999'], 'val': [], 'test': ['1014']}))
    with pytest.raises(ValueError, match=r"s\.json: 1 tile\(s\) of 'train' are not in the "
                       r"dataset: \['9999'\]"):
        EndoNukePointDataset(data_root=ENDO, split_file=str(path), split='train', pipeline=[])
    with pytest.raises(ValueError, match="has no split 'dev'"):
        read_split_ids(str(path), 'dev')
    path.write_text(json.dumps({'train': ['1010', '1010']}))
    with pytest.raises(ValueError, match='listed twice'):
        read_split_ids(str(path), 'train')
    path.write_text('{"train": [')
    with pytest.raises(ValueError, match='could not parse split file'):
        read_split_ids(str(path), 'train')
    with pytest.raises(FileNotFoundError, match='make_real_splits'):
        read_split_ids(str(tmp_path / 'missing.json'), 'train')
    tool = load_tool('make_real_splits')
    path.write_text(json.dumps({'train': ['1010'], 'test': ['9999']}))
    assert tool.main([ENDO, '--check', str(path)]) == 1
