"""tools/dataset_converters: HER2 JSON, reference h5 and frozen sparse subsets round trips."""
import importlib.util
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

import protocal  # noqa: F401
from protocal.datasets import Her2PointDataset, PointDataset, read_csv_points
from protocal.datasets.transforms import SparsePointSampling

TOOLS = osp.join(osp.dirname(__file__), '..', 'tools', 'dataset_converters')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_img(path, h=64, w=64):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def roilist(points):
    return {'roilist': [{'remark': r, 'path': {'x': [x], 'y': [y]}} for x, y, r in points]}


# ------------------------------------------------------------------------------------ HER2 JSON
@pytest.fixture
def raw_her2(tmp_path):
    jdir, idir = tmp_path / 'raw_json', tmp_path / 'raw_img'
    os.makedirs(jdir)
    files = {
        '1': [(10, 12, 'pos3+'), (20.5, 30, 'neg'), (40, 41, 'lymph'), (2, 3, 'pos1+')],
        '2': [(5, 6, 'neg')],
        '3': [],
    }
    for stem, pts in files.items():
        (jdir / f'{stem}.json').write_text(json.dumps(roilist(pts), ensure_ascii=False))
        write_img(idir / f'{stem}.jpg')
    return jdir, idir


def test_her2_json_to_csv_round_trip(tmp_path, raw_her2, capsys):
    tool = load_tool('her2_json_to_csv')
    jdir, idir = raw_her2
    cmap = tmp_path / 'map.json'
    cmap.write_text(json.dumps({'pos3+': 'tumor', 'pos1+': 'tumor', 'neg': 'other', 'lymph': None}))
    out = tmp_path / 'her2'
    assert tool.main([str(jdir), str(out), '--img-dir', str(idir), '--split', 'train',
                      '--class-map', str(cmap)]) == 0
    assert 'wrote 3 files, 4 points' in capsys.readouterr().out
    assert sorted(os.listdir(out / 'img' / 'train')) == ['1.png', '2.png', '3.png']
    ds = Her2PointDataset(data_root=str(out), split='train')
    assert len(ds) == 3
    info = ds.get_data_info(0)
    np.testing.assert_array_equal(info['gt_points'], [[10, 12], [20.5, 30], [2, 3]])
    np.testing.assert_array_equal(info['gt_points_labels'], [0, 1, 0])
    np.testing.assert_array_equal(ds.get_data_info(1)['gt_points_labels'], [1])
    assert ds.get_data_info(2)['gt_points'].shape == (0, 2)


def test_her2_json_list_classes_and_raw_passthrough(tmp_path, raw_her2, capsys):
    tool = load_tool('her2_json_to_csv')
    jdir, _ = raw_her2
    assert tool.main([str(jdir), '--list-classes']) == 0
    lines = capsys.readouterr().out.split('\n')
    assert lines[0].split() == ['2', 'neg']
    stats = tool.convert(str(jdir), str(tmp_path / 'out'), split='val')
    assert stats['points'] == 5
    raw = read_csv_points(str(tmp_path / 'out' / 'ground_truth' / 'val' / '1.csv'))
    assert raw.tokens == ['pos3+', 'neg', 'lymph', 'pos1+']


def test_her2_json_errors(tmp_path, raw_her2):
    tool = load_tool('her2_json_to_csv')
    jdir, _ = raw_her2
    with pytest.raises(ValueError, match=r"remarks missing from the class map.*'neg' \(2 points\)"):
        tool.convert(str(jdir), str(tmp_path / 'o'), class_map={'pos3+': 'tumor'})
    bad = tmp_path / 'bad'
    os.makedirs(bad)
    (bad / 'x.json').write_text('{"roilist": [{"remark": "a", "path": {"x": []}}]}')
    with pytest.raises(ValueError, match=r'x\.json, roilist\[0\]: expected'):
        tool.convert(str(bad), str(tmp_path / 'o'))
    (bad / 'x.json').write_text('{not json')
    with pytest.raises(ValueError, match=r'could not parse .*x\.json as JSON'):
        tool.convert(str(bad), str(tmp_path / 'o'))


def test_her2_json_image_size_filter(tmp_path, raw_her2):
    tool = load_tool('her2_json_to_csv')
    jdir, idir = raw_her2
    write_img(idir / '2.jpg', 64, 32)
    stats = tool.convert(str(jdir), str(tmp_path / 'o'), img_dir=str(idir), image_size=(64, 64))
    assert stats['skipped_images'] == 1 and stats['files'] == 2
    assert not osp.exists(tmp_path / 'o' / 'ground_truth' / 'train' / '2.csv')


# ------------------------------------------------------------------------------- reference h5
def gaussian_heatmap(points, labels, n_ch, size, radius=4):
    heat = np.zeros((n_ch, size, size))
    yy, xx = np.mgrid[:size, :size]
    for (x, y), c in zip(points, labels):
        d2 = (xx - int(x))**2 + (yy - int(y))**2
        heat[c] += np.where(d2 <= radius**2, np.exp(-d2 / (2 * (radius / 2)**2)), 0)
    heat = np.clip(heat, 0, 1)
    heat[0] = np.clip(1 - heat[1:].sum(0), 0, 1)
    return heat


def test_h5_to_csv_round_trip(tmp_path):
    h5py = pytest.importorskip('h5py')
    tool = load_tool('h5_heatmaps_to_csv')
    coords = np.array([[10, 12], [30, 31], [50, 8], [70, 70]], np.float64)  # last: outside 64 px
    labels = np.array([1, 2, 1, 2])
    h5dir = tmp_path / 'h5'
    os.makedirs(h5dir)
    with h5py.File(h5dir / '5.h5', 'w') as f:
        f['class_heat_map'] = gaussian_heatmap(coords[:3], labels[:3], 3, 64)
        f['coords'] = coords
        f['sparse_coords'] = coords[[1]]
        f['sparse_coords_label'] = np.array([2.0])
    stats = tool.convert(str(h5dir), str(tmp_path / 'csv'), channel_names=['tumor', 'other'])
    assert stats == dict(files=1, points=3, annotated=1, skipped=1)
    raw = read_csv_points(str(tmp_path / 'csv' / '5.csv'))
    np.testing.assert_array_equal(raw.xy, coords[:3])
    assert raw.tokens == ['tumor', 'other', 'tumor']
    np.testing.assert_array_equal(raw.annotated, [False, True, False])

    tool.convert(str(h5dir), str(tmp_path / 'sparse'), source='sparse')
    raw = read_csv_points(str(tmp_path / 'sparse' / '5.csv'))
    np.testing.assert_array_equal(raw.xy, [[30, 31]])
    assert raw.tokens == ['2']

    tool.convert(str(h5dir), str(tmp_path / 'peaks'), source='peaks', min_distance=3,
                 exclude_border=3)
    raw = read_csv_points(str(tmp_path / 'peaks' / '5.csv'))
    assert sorted(map(tuple, raw.xy.tolist())) == [(10, 12), (30, 31), (50, 8)]
    assert raw.annotated is None


def test_h5_missing_key_is_named(tmp_path):
    h5py = pytest.importorskip('h5py')
    tool = load_tool('h5_heatmaps_to_csv')
    os.makedirs(tmp_path / 'h5')
    with h5py.File(tmp_path / 'h5' / '1.h5', 'w') as f:
        f['coords'] = np.zeros((0, 2))
    with pytest.raises(ValueError, match=r"1\.h5: missing dataset 'class_heat_map'"):
        tool.convert(str(tmp_path / 'h5'), str(tmp_path / 'csv'))


# ------------------------------------------------------------------------- freezing subsets
@pytest.fixture
def point_folder(tmp_path):
    rng = np.random.default_rng(0)
    for stem in ('a', 'b', 'c'):
        write_img(tmp_path / 'images' / 'train' / f'{stem}.png')
        pts = rng.uniform(0, 63, (40, 2)).round(2)
        cls = rng.integers(1, 3, 40)
        os.makedirs(tmp_path / 'annotations' / 'train', exist_ok=True)
        with open(tmp_path / 'annotations' / 'train' / f'{stem}.csv', 'w') as f:
            f.writelines(f'{x},{y},{c}\n' for (x, y), c in zip(pts, cls))
    return tmp_path


def test_freeze_folder_mode_reproduces_online_sampling(point_folder, capsys):
    tool = load_tool('freeze_sparse_subset')
    out = point_folder / 'annotations' / 'train_20pct'
    assert tool.main(['--data-root', str(point_folder), '--classes', 'tumor', 'other',
                      '--ratio', '0.2', '--seed', '3', '--mode', 'fixed_count', str(out)]) == 0
    assert 'wrote 3 files' in capsys.readouterr().out
    classes = dict(classes=('tumor', 'other'))
    full = PointDataset(data_root=str(point_folder), metainfo=classes)
    frozen = PointDataset(
        data_root=str(point_folder), metainfo=classes,
        data_prefix=dict(img='images/train', ann='annotations/train_20pct'))
    online = SparsePointSampling(0.2, seed=3, mode='fixed_count')
    for i in range(3):
        a, b = full.get_data_info(i), frozen.get_data_info(i)
        np.testing.assert_allclose(b['gt_points'], a['gt_points'])
        np.testing.assert_array_equal(b['gt_points_labels'], a['gt_points_labels'])
        assert b['sparse_frozen'] and b['gt_points_annotated'].sum() == 8
        np.testing.assert_array_equal(b['gt_points_annotated'],
                                      online(dict(a))['gt_points_annotated'])
        # the online transform keeps frozen flags, whatever its own ratio
        np.testing.assert_array_equal(
            SparsePointSampling(0.9)(dict(b))['gt_points_annotated'], b['gt_points_annotated'])


def test_freeze_only_annotated_and_config_mode(point_folder, tmp_path):
    tool = load_tool('freeze_sparse_subset')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        'train_dataloader = dict(dataset=dict(type="PointDataset", '
        f'data_root={str(point_folder)!r}, metainfo=dict(classes=("tumor", "other")), '
        'pipeline=[dict(type="LoadHistologyImage"), '
        'dict(type="SparsePointSampling", ratio=0.25, seed=7, mode="fixed_count")]))\n')
    out = tmp_path / 'sparse_only'
    assert tool.main([str(cfg), str(out), '--only-annotated']) == 0
    raw = read_csv_points(str(out / 'a.csv'))
    assert len(raw) == 10 and raw.annotated is None
    full = PointDataset(data_root=str(point_folder), metainfo=dict(classes=('tumor', 'other')))
    a = full.get_data_info(0)
    keep = SparsePointSampling(0.25, seed=7, mode='fixed_count')(dict(a))['gt_points_annotated']
    np.testing.assert_allclose(raw.xy, a['gt_points'][keep], rtol=0, atol=1e-4)
    assert raw.tokens == [('tumor', 'other')[i] for i in a['gt_points_labels'][keep]]
