"""Point datasets, annotation readers and LoadHistologyImage (tiny files in tmp_path)."""
import json
import logging
import os
import os.path as osp

import cv2
import numpy as np
import pytest

import protocal  # noqa: F401  (registers everything)
import protocal.datasets.point_dataset as point_dataset_module
from mmdet.registry import DATASETS, TRANSFORMS
from protocal.datasets import (ClassResolver, Her2PointDataset, OCELOTCellDataset, PointDataset,
                               read_csv_points, read_geojson_points, write_csv_points)
from protocal.datasets.transforms import LoadHistologyImage, SparsePointSampling

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', 'configs', '_base_', 'datasets')


# ------------------------------------------------------------------------------------- helpers
def write_img(path, h=32, w=40, value=100):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


def write_text(path, text):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    return str(path)


@pytest.fixture
def logs(monkeypatch):
    """Records (message, level) of every print_log call made by the dataset module."""
    records = []

    def fake_print_log(msg, logger=None, level=logging.INFO):
        records.append((msg, level))

    monkeypatch.setattr(point_dataset_module, 'print_log', fake_print_log)
    return records


def warnings_of(records):
    return [m for m, lvl in records if lvl == logging.WARNING]


def make_csv_dataset(root, files, classes=('tumor', 'other'), **kwargs):
    """files: stem -> csv text (None: image only). Images are 32x40 (h x w) PNGs."""
    for stem, text in files.items():
        write_img(root / 'images' / 'train' / f'{stem}.png')
        if text is not None:
            write_text(root / 'annotations' / 'train' / f'{stem}.csv', text)
    os.makedirs(root / 'annotations' / 'train', exist_ok=True)
    return PointDataset(data_root=str(root), metainfo=dict(classes=classes), **kwargs)


# ------------------------------------------------------------------------------------------ CSV
def test_ocelot_layout_and_class_remap(tmp_path):
    root = tmp_path / 'ocelot'
    for split in ('train', 'val'):
        write_img(root / 'images' / split / 'cell' / '001.jpg', 64, 64)
    # OCELOT: no header, label 1 = BC, 2 = TC
    write_text(root / 'annotations' / 'train' / 'cell' / '001.csv', '10,20,2\n30,40,1\n5,6,2\n')
    write_text(root / 'annotations' / 'val' / 'cell' / '001.csv', '')
    ds = OCELOTCellDataset(data_root=str(root), split='train')
    assert ds.metainfo['classes'] == ('tumor_cell', 'background_cell')
    info = ds.get_data_info(0)
    assert info['img_path'].endswith(osp.join('images', 'train', 'cell', '001.jpg'))
    assert info['img_id'] == '001'
    assert info['gt_points'].dtype == np.float32
    np.testing.assert_array_equal(info['gt_points'], [[10, 20], [30, 40], [5, 6]])
    assert info['gt_points_labels'].dtype == np.int64
    np.testing.assert_array_equal(info['gt_points_labels'], [0, 1, 0])  # TC -> 0, BC -> 1
    assert info['gt_points_annotated'].dtype == np.bool_
    assert info['gt_points_annotated'].all() and not info['sparse_frozen']
    assert info['mpp'] == 0.2
    assert (info['width'], info['height']) == (64, 64)
    val = OCELOTCellDataset(data_root=str(root), split='val', test_mode=True)
    assert len(val) == 1 and val.get_data_info(0)['gt_points'].shape == (0, 2)


def test_ocelot_rejects_unknown_label(tmp_path):
    root = tmp_path / 'ocelot'
    write_img(root / 'images' / 'train' / 'cell' / '7.jpg', 64, 64)
    write_text(root / 'annotations' / 'train' / 'cell' / '7.csv', '1,1,2\n2,2,3\n')
    with pytest.raises(ValueError, match=r"7\.csv, line 2: unknown class '3'"):
        OCELOTCellDataset(data_root=str(root))


def test_csv_header_names_ids_and_annotated_column(tmp_path, logs):
    ds = make_csv_dataset(
        tmp_path, {
            'a': 'x,y,label\n1.5,2.5,tumor\n3,4,2\n',
            'b': 'X,Y,Class,annotated\n1,1,other,0\n2,2,tumor,yes\n',
        })
    a, b = ds.get_data_info(0), ds.get_data_info(1)
    np.testing.assert_allclose(a['gt_points'], [[1.5, 2.5], [3, 4]])
    np.testing.assert_array_equal(a['gt_points_labels'], [0, 1])  # id 2 -> classes[1]
    assert not a['sparse_frozen']
    np.testing.assert_array_equal(b['gt_points_labels'], [1, 0])
    np.testing.assert_array_equal(b['gt_points_annotated'], [False, True])
    assert b['sparse_frozen']
    assert 'mpp' not in a
    assert not warnings_of(logs)


def test_images_are_naturally_sorted(tmp_path):
    ds = make_csv_dataset(tmp_path, {'10': '', '2': '', '1': ''})
    assert [ds.get_data_info(i)['img_id'] for i in range(3)] == ['1', '2', '10']


def test_empty_annotation_file_and_single_class_without_class_column(tmp_path):
    ds = make_csv_dataset(tmp_path, {'a': '', 'b': '3,4\n5,6\n'}, classes=('cell', ))
    assert ds.get_data_info(0)['gt_points'].shape == (0, 2)
    assert ds.get_data_info(0)['gt_points_labels'].shape == (0, )
    np.testing.assert_array_equal(ds.get_data_info(1)['gt_points_labels'], [0, 0])


def test_class_less_points_need_class_map_for_multi_class(tmp_path):
    with pytest.raises(ValueError, match=r'a\.csv, line 1: the point has no class'):
        make_csv_dataset(tmp_path, {'a': '3,4\n'})
    ds = PointDataset(
        data_root=str(tmp_path), metainfo=dict(classes=('tumor', 'other')),
        class_map={None: 'other'})
    np.testing.assert_array_equal(ds.get_data_info(0)['gt_points_labels'], [1])


def test_class_map_renames_and_drops_with_one_info_line(tmp_path, logs):
    ds = make_csv_dataset(
        tmp_path, {'a': 'x,y,class\n1,1,Tumor\n2,2,Stroma\n3,3,Ignore\n4,4,Ignore\n'},
        class_map={'Tumor': 'tumor', 'Stroma': 'other', 'Ignore': None})
    info = ds.get_data_info(0)
    np.testing.assert_array_equal(info['gt_points'], [[1, 1], [2, 2]])
    np.testing.assert_array_equal(info['gt_points_labels'], [0, 1])
    assert not warnings_of(logs)
    dropped = [m for m, lvl in logs if 'maps to None' in m]
    assert len(dropped) == 1 and 'dropped 2 points' in dropped[0] and "'Ignore': 2" in dropped[0]


def test_class_map_numeric_keys_match_any_spelling(tmp_path):
    ds = make_csv_dataset(tmp_path, {'a': '1,1,2.0\n2,2,1\n'}, class_map={2: 'tumor', '1': 'other'})
    np.testing.assert_array_equal(ds.get_data_info(0)['gt_points_labels'], [0, 1])


def test_class_map_value_must_be_a_class(tmp_path):
    with pytest.raises(ValueError, match="class_map entry 'T': 'tumour' is not one of"):
        make_csv_dataset(tmp_path, {'a': ''}, class_map={'T': 'tumour'})


def test_unknown_class_names_file_and_row(tmp_path):
    with pytest.raises(ValueError) as e:
        make_csv_dataset(tmp_path, {'a': '', 'b': 'x,y,class\n1,1,tumor\n2,2,lymphocyte\n'})
    msg = str(e.value)
    assert 'b.csv, line 3' in msg and "unknown class 'lymphocyte'" in msg and 'tumor' in msg


def test_integer_id_out_of_range_mentions_class_id_base(tmp_path):
    with pytest.raises(ValueError, match=r"unknown class '0'.*class_id_base=1"):
        make_csv_dataset(tmp_path, {'a': '1,1,0\n'})
    ds = PointDataset(
        data_root=str(tmp_path), metainfo=dict(classes=('tumor', 'other')), class_id_base=0)
    np.testing.assert_array_equal(ds.get_data_info(0)['gt_points_labels'], [0])


def test_nan_and_outside_points_are_dropped_with_one_warning_per_file(tmp_path, logs):
    # images are 40 wide (x) and 32 high (y); pixel centres on integers, so a point is inside
    # when -0.5 <= x < 39.5 and -0.5 <= y < 31.5
    ds = make_csv_dataset(
        tmp_path, {
            'a': '1,1,1\nnan,3,1\n39.4,31.4,2\n39.5,5,1\n5,-0.6,1\n',
            'b': '2,2,1\n3,inf,2\n',
            'c': '1,1,1\n',
        })
    np.testing.assert_allclose(ds.get_data_info(0)['gt_points'], [[1, 1], [39.4, 31.4]],
                               rtol=1e-6)
    np.testing.assert_array_equal(ds.get_data_info(0)['gt_points_labels'], [0, 1])
    np.testing.assert_array_equal(ds.get_data_info(1)['gt_points'], [[2, 2]])
    warns = warnings_of(logs)
    assert len(warns) == 2
    assert 'a.csv' in warns[0] and 'dropped 3' in warns[0]
    assert '1 with NaN/inf' in warns[0] and '2 outside the 40x32 image' in warns[0]
    assert 'b.csv' in warns[1] and 'dropped 1' in warns[1]


def test_check_bounds_false_keeps_outside_points(tmp_path, logs):
    ds = make_csv_dataset(tmp_path, {'a': '100,100,1\n'}, check_bounds=False)
    np.testing.assert_array_equal(ds.get_data_info(0)['gt_points'], [[100, 100]])
    assert not warnings_of(logs)


def test_unparsable_csv_names_path_and_expectation(tmp_path):
    with pytest.raises(ValueError, match=r"a\.csv, line 2: could not parse y='oops'"):
        make_csv_dataset(tmp_path, {'a': '1,2,1\n3,oops,1\n'})


def test_csv_with_wrong_column_count(tmp_path):
    with pytest.raises(ValueError, match=r'a\.csv, line 1: expected 2 or 3 comma-separated'):
        make_csv_dataset(tmp_path, {'a': '1,2,1,5,6\n'})


def test_csv_header_without_xy(tmp_path):
    with pytest.raises(ValueError, match=r'a\.csv, line 1: could not parse the header'):
        make_csv_dataset(tmp_path, {'a': 'col,row,class\n1,2,1\n'})


def test_invalid_annotated_value(tmp_path):
    with pytest.raises(ValueError, match=r'a\.csv, line 2: column "annotated"'):
        make_csv_dataset(tmp_path, {'a': 'x,y,class,annotated\n1,2,1,maybe\n'})


# -------------------------------------------------------------------------------- pairing errors
def test_count_mismatch_lists_unmatched_names(tmp_path):
    write_img(tmp_path / 'images' / 'train' / 'only_image.png')
    write_img(tmp_path / 'images' / 'train' / 'both.png')
    write_text(tmp_path / 'annotations' / 'train' / 'both.csv', '')
    write_text(tmp_path / 'annotations' / 'train' / 'only_ann.csv', '')
    kwargs = dict(data_root=str(tmp_path), metainfo=dict(classes=('cell', )))
    with pytest.raises(ValueError) as e:
        PointDataset(**kwargs)
    msg = str(e.value)
    assert '1 image(s) without annotation: only_image.png' in msg
    assert '1 annotation(s) without image: only_ann.csv' in msg
    # allowing missing annotations does not excuse annotations without image
    with pytest.raises(ValueError, match='only_ann.csv'):
        PointDataset(allow_missing_annotations=True, **kwargs)
    os.remove(tmp_path / 'annotations' / 'train' / 'only_ann.csv')
    with pytest.raises(ValueError, match='allow_missing_annotations=True'):
        PointDataset(**kwargs)
    ds = PointDataset(allow_missing_annotations=True, **kwargs)
    assert len(ds) == 2
    info = ds.get_data_info(1)
    assert info['img_id'] == 'only_image' and info['gt_points'].shape == (0, 2)


def test_duplicate_image_stems_are_an_error(tmp_path):
    write_img(tmp_path / 'images' / 'train' / 'a.png')
    write_img(tmp_path / 'images' / 'train' / 'a.jpg')
    write_text(tmp_path / 'annotations' / 'train' / 'a.csv', '')
    with pytest.raises(ValueError, match="share the stem 'a'"):
        PointDataset(data_root=str(tmp_path), metainfo=dict(classes=('cell', )))


def test_missing_root_and_folders(tmp_path):
    missing = str(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError) as e:
        PointDataset(data_root=missing, metainfo=dict(classes=('cell', )))
    assert missing in str(e.value) and 'Expected layout' in str(e.value)
    assert 'annotations/train' in str(e.value)
    os.makedirs(tmp_path / 'images' / 'train')
    with pytest.raises(FileNotFoundError, match='annotation folder'):
        PointDataset(data_root=str(tmp_path), metainfo=dict(classes=('cell', )))


def test_her2_missing_root_points_to_converter_and_docs(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        Her2PointDataset(data_root=str(tmp_path / 'her2'))
    msg = str(e.value)
    assert str(tmp_path / 'her2') in msg and '\n' in msg
    assert 'img/train' in msg and 'ground_truth/train' in msg
    assert 'tools/dataset_converters/her2_json_to_csv.py' in msg and 'docs/datasets.md' in msg


def test_ocelot_missing_root_shows_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'images/\{train,val,test\}/cell'):
        OCELOTCellDataset(data_root=str(tmp_path / 'ocelot'), split='val')


def test_missing_classes_is_a_clear_error(tmp_path):
    write_img(tmp_path / 'images' / 'train' / 'a.png')
    write_text(tmp_path / 'annotations' / 'train' / 'a.csv', '')
    with pytest.raises(ValueError, match=r'metainfo=dict\(classes='):
        PointDataset(data_root=str(tmp_path))


def test_her2_names_and_reference_ids(tmp_path):
    write_img(tmp_path / 'img' / 'val' / '1.png', 64, 64)
    write_text(tmp_path / 'ground_truth' / 'val' / '1.csv', 'x,y,class\n1,2,tumor\n3,4,2\n5,6,1\n')
    ds = Her2PointDataset(data_root=str(tmp_path), split='val')
    assert ds.metainfo['classes'] == ('tumor', 'other')
    np.testing.assert_array_equal(ds.get_data_info(0)['gt_points_labels'], [0, 1, 0])
    sel = Her2PointDataset(
        data_root=str(tmp_path), split='val', metainfo=dict(classes=('tumor', )),
        class_map={'other': None, 2: None})
    np.testing.assert_array_equal(sel.get_data_info(0)['gt_points'], [[1, 2], [5, 6]])


def test_filter_empty_gt(tmp_path):
    ds = make_csv_dataset(
        tmp_path, {'a': '', 'b': '1,1,1\n'}, filter_cfg=dict(filter_empty_gt=True))
    assert len(ds) == 1 and ds.get_data_info(0)['img_id'] == 'b'


# ------------------------------------------------------------------------------------- GeoJSON
QUPATH = {
    'type': 'FeatureCollection',
    'features': [
        {'type': 'Feature', 'geometry': {'type': 'Point', 'coordinates': [1.0, 2.0]},
         'properties': {'objectType': 'annotation',
                        'classification': {'name': 'Tumor', 'color': [200, 0, 0]}}},
        {'type': 'Feature', 'geometry': {'type': 'MultiPoint', 'coordinates': [[3, 4], [5, 6]]},
         'properties': {'classification': 'Stroma', 'annotated': False}},
        {'type': 'Feature', 'geometry': {'type': 'Polygon',
                                         'coordinates': [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
         'properties': {'classification': {'name': 'Tumor'}}},
        {'type': 'Feature', 'geometry': {'type': 'Point', 'coordinates': [7, 8, 0]},
         'properties': {'name': 'other'}},
    ]
}


def test_geojson_qupath_export(tmp_path, logs):
    write_img(tmp_path / 'images' / 'train' / 'a.png')
    write_text(tmp_path / 'annotations' / 'train' / 'a.geojson', json.dumps(QUPATH))
    ds = PointDataset(
        data_root=str(tmp_path), metainfo=dict(classes=('tumor', 'other')),
        class_map={'Tumor': 'tumor', 'Stroma': 'other'})
    info = ds.get_data_info(0)
    # QuPath coordinates have their origin at the image corner: pixel centres are at +0.5
    np.testing.assert_array_equal(info['gt_points'],
                                  np.array([[1, 2], [3, 4], [5, 6], [7, 8]]) - 0.5)
    np.testing.assert_array_equal(info['gt_points_labels'], [0, 1, 1, 1])
    np.testing.assert_array_equal(info['gt_points_annotated'], [True, False, False, True])
    assert info['sparse_frozen']
    warns = warnings_of(logs)
    assert len(warns) == 1 and 'a.geojson' in warns[0] and '1 Polygon geometry' in warns[0]


def test_geojson_list_of_features_and_empty(tmp_path):
    path = write_text(tmp_path / 'a.json', json.dumps(QUPATH['features'][:1]))
    raw = read_geojson_points(path)
    assert raw.tokens == ['Tumor'] and raw.annotated is None
    assert len(read_geojson_points(write_text(tmp_path / 'e.json', ''))) == 0
    assert len(read_geojson_points(write_text(tmp_path / 'f.json', '[]'))) == 0


def test_geojson_unparsable(tmp_path):
    path = write_text(tmp_path / 'bad.geojson', '{"type": "FeatureCollection", ')
    with pytest.raises(ValueError, match=r'could not parse .*bad\.geojson as JSON.*expected'):
        read_geojson_points(path)
    path = write_text(tmp_path / 'obj.geojson', '{"type": "Topology"}')
    with pytest.raises(ValueError, match=r"obj\.geojson: expected a GeoJSON.*'Topology'"):
        read_geojson_points(path)
    path = write_text(
        tmp_path / 'pt.geojson',
        json.dumps([{'type': 'Feature', 'geometry': {'type': 'Point', 'coordinates': ['a']}}]))
    with pytest.raises(ValueError, match=r'pt\.geojson, feature 0: expected point coordinates'):
        read_geojson_points(path)


# ---------------------------------------------------------------------------------------- COCO
def test_coco_points_keypoints_bbox(tmp_path, logs):
    write_img(tmp_path / 'images' / 'x1.png', 32, 40)
    write_img(tmp_path / 'images' / 'x2.png', 32, 40)
    coco = {
        'images': [{'id': 7, 'file_name': 'x1.png', 'width': 40, 'height': 32},
                   {'id': 8, 'file_name': 'x2.png'}],
        'categories': [{'id': 1, 'name': 'tumor'}, {'id': 5, 'name': 'lympho'}],
        'annotations': [
            {'id': 1, 'image_id': 7, 'category_id': 1, 'point': [1, 2]},
            {'id': 2, 'image_id': 7, 'category_id': 5, 'keypoints': [3, 4, 2]},
            {'id': 3, 'image_id': 7, 'category_id': 1, 'keypoints': [0, 0, 0]},
            {'id': 4, 'image_id': 8, 'category_id': 1, 'bbox': [10, 10, 4, 6],
             'annotated': False},
        ]
    }
    write_text(tmp_path / 'coco.json', json.dumps(coco))
    ds = PointDataset(
        data_root=str(tmp_path), data_prefix=dict(img='images'), ann_file='coco.json',
        metainfo=dict(classes=('tumor', 'other')), class_map={5: 'other'})
    assert ds.ann_format == 'coco'
    a, b = ds.get_data_info(0), ds.get_data_info(1)
    assert a['img_id'] == 7 and (a['width'], a['height']) == (40, 32)
    np.testing.assert_array_equal(a['gt_points'], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(a['gt_points_labels'], [0, 1])
    np.testing.assert_array_equal(b['gt_points'], [[12, 13]])
    np.testing.assert_array_equal(b['gt_points_annotated'], [False])
    warns = warnings_of(logs)
    assert len(warns) == 1 and '1 unlabelled keypoint' in warns[0]


def test_coco_missing_image_and_bad_category(tmp_path):
    write_img(tmp_path / 'images' / 'x1.png')
    coco = {'images': [{'id': 1, 'file_name': 'x1.png'}, {'id': 2, 'file_name': 'gone.png'}],
            'categories': [{'id': 1, 'name': 'cell'}], 'annotations': []}
    write_text(tmp_path / 'coco.json', json.dumps(coco))
    kwargs = dict(data_root=str(tmp_path), data_prefix=dict(img='images'), ann_file='coco.json',
                  metainfo=dict(classes=('cell', )))
    with pytest.raises(ValueError, match=r'annotation\(s\) without image: gone.png'):
        PointDataset(**kwargs)
    coco['images'].pop()
    coco['annotations'] = [{'id': 9, 'image_id': 1, 'category_id': 3, 'point': [1, 1]}]
    write_text(tmp_path / 'coco.json', json.dumps(coco))
    with pytest.raises(ValueError, match=r'coco\.json, annotations\[0\] \(id 9\): category_id 3'):
        PointDataset(**kwargs)
    write_text(tmp_path / 'coco.json', '[1, 2]')
    with pytest.raises(ValueError, match=r'could not parse .*coco\.json: expected a COCO'):
        PointDataset(**kwargs)
    with pytest.raises(FileNotFoundError, match='COCO annotation file'):
        PointDataset(**dict(kwargs, ann_file='missing.json'))


# ------------------------------------------------------------------------------ pieces / config
def test_class_resolver_order():
    r = ClassResolver(('a', 'b'), class_map={'b': 'a', 3: None}, class_id_base=1)
    assert r.resolve('a') == 0 and r.resolve('b') == 0 and r.resolve('2') == 1
    assert r.resolve('3') == ClassResolver.DROP
    with pytest.raises(KeyError):
        r.resolve('4')
    assert ClassResolver(('a', 'b'), class_id_base=None).resolve('b') == 1
    with pytest.raises(KeyError):
        ClassResolver(('a', 'b'), class_id_base=None).resolve('1')


def test_csv_writer_round_trip(tmp_path):
    path = str(tmp_path / 'sub' / 'p.csv')
    write_csv_points(path, [[1.25, 2], [3, 4.5]], ['tumor', 2], [True, False])
    with open(path) as f:
        assert f.read() == 'x,y,class,annotated\n1.25,2,tumor,1\n3,4.5,2,0\n'
    raw = read_csv_points(path)
    np.testing.assert_array_equal(raw.xy, [[1.25, 2], [3, 4.5]])
    assert raw.tokens == ['tumor', '2'] and raw.where == ['line 2', 'line 3']
    np.testing.assert_array_equal(raw.annotated, [True, False])


def test_dataset_pipeline_loads_image(tmp_path):
    make_csv_dataset(tmp_path, {'a': '1,1,1\n'})
    ds = PointDataset(
        data_root=str(tmp_path), metainfo=dict(classes=('tumor', 'other')),
        pipeline=[LoadHistologyImage(), SparsePointSampling(ratio=1.0)])
    out = ds[0]
    assert out['img'].shape == (32, 40, 3) and out['img_shape'] == (32, 40)
    np.testing.assert_array_equal(out['gt_points_annotated'], [True])


@pytest.mark.parametrize('name,dataset_type,mode', [('her2_points.py', 'Her2PointDataset',
                                                     'reference'),
                                                    ('ocelot2023_cell.py', 'OCELOTCellDataset',
                                                     'ocelot'),
                                                    ('point_csv.py', 'PointDataset', 'ocelot')])
def test_base_dataset_configs(tmp_path, name, dataset_type, mode):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    train = cfg.train_dataloader
    assert train.dataset.type == dataset_type and train.sampler.shuffle
    assert train.collate_fn.type == 'pseudo_collate' and train.persistent_workers
    types = [t['type'] for t in train.dataset.pipeline]
    assert types[:2] == ['LoadHistologyImage', 'SparsePointSampling'] and types[-1] == \
        'PackPointDetInputs'
    assert [t['type'] for t in cfg.test_dataloader.dataset.pipeline] == [
        'LoadHistologyImage', 'PackPointDetInputs']
    assert cfg.val_dataloader.dataset.test_mode and not cfg.val_dataloader.sampler.shuffle
    assert cfg.val_evaluator == dict(type='PointF1Metric', mode=mode, radius=15)
    # every sampling / loading transform is registered and the dataset builds from the config
    for t in train.dataset.pipeline[:2]:
        TRANSFORMS.build(t)
    ds_cfg = cfg.val_dataloader.dataset.to_dict()
    ds_cfg.update(data_root=str(tmp_path / 'missing'), pipeline=[])
    with pytest.raises(FileNotFoundError):
        DATASETS.build(ds_cfg)


# ------------------------------------------------------------------------------------- loading
def test_load_16bit_gray_scaled_minmax(tmp_path):
    img = np.array([[100, 200], [300, 1120]], np.uint16)
    path = str(tmp_path / 'a.png')
    cv2.imwrite(path, img)
    out = LoadHistologyImage()(dict(img_path=path))
    assert out['img'].dtype == np.uint8 and out['img'].shape == (2, 2, 3)
    expected = np.rint((img - 100) * 255.0 / 1020).astype(np.uint8)  # 0, 25, 50, 255
    for c in range(3):
        np.testing.assert_array_equal(out['img'][..., c], expected)
    assert out['img_shape'] == (2, 2) and out['ori_shape'] == (2, 2)
    full = LoadHistologyImage(uint16_scaling='full_range')(dict(img_path=path))['img']
    np.testing.assert_array_equal(full[..., 0], np.rint(img / 257.0).astype(np.uint8))


def test_load_16bit_tiff(tmp_path):
    img = np.zeros((3, 5), np.uint16)
    img[1, 2] = 4000
    path = str(tmp_path / 'a.tif')
    cv2.imwrite(path, img)
    out = LoadHistologyImage()(dict(img_path=path))['img']
    assert out.shape == (3, 5, 3) and out[1, 2, 0] == 255 and out.sum() == 3 * 255


def test_load_rgba_drops_alpha_and_keeps_bgr(tmp_path):
    bgra = np.zeros((4, 6, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0
    path = str(tmp_path / 'a.png')
    cv2.imwrite(path, bgra)
    img = LoadHistologyImage()(dict(img_path=path))['img']
    assert img.shape == (4, 6, 3)
    np.testing.assert_array_equal(img[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(img, cv2.imread(path, cv2.IMREAD_COLOR))


def test_load_8bit_gray_jpeg(tmp_path):
    path = str(tmp_path / 'g.jpg')
    cv2.imwrite(path, np.full((8, 9), 77, np.uint8))
    img = LoadHistologyImage()(dict(img_path=path))['img']
    assert img.shape == (8, 9, 3) and np.all(img[..., 0] == img[..., 2])


def test_load_non_image_names_path(tmp_path):
    path = write_text(tmp_path / 'fake.png', 'this is not an image')
    with pytest.raises(OSError, match=r'fake\.png.*expected an RGB image'):
        LoadHistologyImage()(dict(img_path=path))
    with pytest.raises(FileNotFoundError, match='missing.png'):
        LoadHistologyImage()(dict(img_path=str(tmp_path / 'missing.png')))


def test_load_array_input_fills_shapes():
    arr = np.zeros((5, 7), np.uint8)
    out = LoadHistologyImage()(dict(img=arr, img_path=None))
    assert out['img'].shape == (5, 7, 3) and out['img_shape'] == (5, 7)
    with pytest.raises(ValueError, match='expected an RGB image'):
        LoadHistologyImage()(dict(img=np.zeros((5, 7, 2), np.uint8)))


def test_dataset_rejects_corrupt_image_with_points(tmp_path):
    write_text(tmp_path / 'images' / 'train' / 'a.png', 'garbage')
    write_text(tmp_path / 'annotations' / 'train' / 'a.csv', '1,1,1\n')
    with pytest.raises(OSError, match=r'a\.png.*expected an RGB image'):
        PointDataset(data_root=str(tmp_path), metainfo=dict(classes=('cell', )))
