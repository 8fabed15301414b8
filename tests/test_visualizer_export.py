"""PointDetLocalVisualizer / draw_points_overlay colours and the CSV / GeoJSON exporters."""
import csv
import json
import os

import mmcv
import numpy as np
import pytest
import torch
from mmdet.registry import VISUALIZERS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData, PixelData

from protocal.apis.export import write_points_csv, write_qupath_geojson
from protocal.visualization import (FN_COLOR, FP_COLOR, TP_COLOR, PointDetLocalVisualizer,
                                    draw_points_overlay, get_palette)

CLASSES = ('tumor', 'other')
PALETTE = [(0, 0, 255), (255, 0, 255)]


def is_colour(pixel, rgb, tol=60):
    return bool(np.all(np.abs(pixel.astype(int) - np.asarray(rgb)) <= tol))


def make_sample(heatmap=None):
    ds = DetDataSample(metainfo=dict(img_path='cell.png', ori_shape=(100, 100)))
    ds.gt_instances = InstanceData(points=torch.tensor([[30.0, 60.0], [70.0, 60.0]]),
                                   labels=torch.tensor([0, 0]))
    ds.pred_instances = InstanceData(points=torch.tensor([[31.0, 60.0], [70.0, 20.0]]),
                                     labels=torch.tensor([0, 0]),
                                     scores=torch.tensor([0.9, 0.8]))
    if heatmap is not None:
        ds.pred_heatmap = PixelData(data=heatmap)
    return ds


def build(name, **kwargs):
    vis = VISUALIZERS.build(dict(type='PointDetLocalVisualizer', name=name, **kwargs))
    vis.dataset_meta = dict(classes=CLASSES, palette=PALETTE)
    return vis


def test_visualizer_writes_tp_fp_fn_colours(tmp_path):
    vis = build('test_vis_colours', show_legend=False)
    image = np.full((100, 100, 3), 128, np.uint8)
    out = tmp_path / 'vis' / 'cell.png'
    # the keyword arguments mmdet's DetVisualizationHook passes
    vis.add_datasample('test_img', image, data_sample=make_sample(), show=False, wait_time=0,
                       pred_score_thr=0.3, out_file=str(out), step=1)
    assert out.is_file()
    drawn = mmcv.imread(str(out), channel_order='rgb')
    assert drawn.shape == (100, 100, 3)
    # TP: prediction (31, 60) matched to GT (30, 60): class-coloured dot, green ring (r = 8)
    assert is_colour(drawn[60, 31], PALETTE[0])
    assert is_colour(drawn[60, 39], TP_COLOR) and is_colour(drawn[52, 31], TP_COLOR)
    # FP: prediction (70, 20) far from any GT: red cross through its centre
    assert is_colour(drawn[20, 70], FP_COLOR)
    # FN: GT (70, 60) not matched: yellow ring
    assert is_colour(drawn[60, 78], FN_COLOR) and is_colour(drawn[68, 70], FN_COLOR)
    # untouched background
    assert (drawn[95, 5] == 128).all() and (drawn[5, 95] == 128).all()
    assert (vis.get_image() == drawn).all()


def test_works_through_mmdet_visualization_hook(tmp_path):
    from types import SimpleNamespace

    from mmdet.engine.hooks import DetVisualizationHook
    build('test_vis_hook', show_legend=False)  # the hook uses the current visualizer
    image_path = tmp_path / 'cell.png'
    mmcv.imwrite(np.full((100, 100, 3), 128, np.uint8), str(image_path))
    ds = make_sample()
    ds.set_metainfo(dict(img_path=str(image_path)))
    hook = DetVisualizationHook(draw=True, test_out_dir='vis', score_thr=0.3)
    hook.after_test_iter(SimpleNamespace(work_dir=str(tmp_path), timestamp='ts'), 0, {}, [ds])
    drawn = mmcv.imread(str(tmp_path / 'ts' / 'vis' / 'cell.png'), channel_order='rgb')
    assert is_colour(drawn[60, 39], TP_COLOR) and is_colour(drawn[20, 70], FP_COLOR)


def test_visualizer_score_threshold_gt_only_and_backend(tmp_path):
    vis = build('test_vis_backend', show_legend=False,
                vis_backends=[dict(type='LocalVisBackend')], save_dir=str(tmp_path))
    image = np.full((100, 100, 3), 128, np.uint8)
    # threshold above the FP's score: the FP is not drawn (nor matched)
    drawn = vis.draw_sample(image, make_sample(), pred_score_thr=0.85)
    assert (drawn[20, 70] == 128).all()
    # GT only: rings in the class colour, no outcome colours
    drawn = vis.draw_sample(image, make_sample(), draw_pred=False)
    assert is_colour(drawn[60, 38], PALETTE[0]) and (drawn[60, 30] == 128).all()
    # no out_file: the image goes to the backends
    vis.add_datasample('val_img', image, data_sample=make_sample(), step=3)
    files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs]
    assert any(f.endswith('val_img_3.png') for f in files), files


def test_visualizer_heatmap_overlay():
    vis = build('test_vis_heatmap', show_legend=False, draw_heatmap=True, heatmap_alpha=1.0)
    heat = torch.zeros(3, 50, 50)  # half resolution: it is resized to the image
    heat[0] = 1.0
    heat[0, :, 25:] = 0.0
    heat[2, :, 25:] = 1.0  # class 2 certain on the right half
    ds = make_sample(heatmap=heat)
    ds.pred_instances = InstanceData(points=torch.zeros(0, 2), labels=torch.zeros(0).long(),
                                     scores=torch.zeros(0))
    image = np.full((100, 100, 3), 128, np.uint8)
    drawn = vis.draw_sample(image, ds, draw_gt=False)
    assert (drawn[50, 10] == 128).all()  # p = 0: unchanged
    assert is_colour(drawn[50, 90], (128, 0, 0), tol=20)  # p = 1, alpha 1: JET's dark red


def test_draw_points_overlay_pred_only_with_legend():
    image = np.full((200, 300, 3), 200, np.uint8)
    pred = dict(points=np.array([[250.0, 150.0], [200.0, 150.0]]), labels=np.array([0, 1]),
                scores=np.array([0.9, 0.2]))
    out = draw_points_overlay(image, pred=pred, classes=CLASSES, palette=PALETTE)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (image == 200).all()  # input untouched
    assert is_colour(out[150, 250], PALETTE[0]) and is_colour(out[150, 200], PALETTE[1])
    assert out[5:20, 5:40].mean() < 150  # legend box darkens the corner
    out = draw_points_overlay(image, pred=pred, classes=CLASSES, palette=PALETTE,
                              score_thr=0.5, legend=False)
    assert (out[150, 200] == 200).all()
    with pytest.raises(ValueError, match='labels'):
        draw_points_overlay(image, pred=dict(points=np.zeros((1, 2)), labels=np.array([5]),
                                             scores=np.ones(1)), classes=CLASSES)
    with pytest.raises(ValueError, match='palette'):
        get_palette(3, PALETTE)


# ------------------------------------------------------------------------------------- export
POINTS = np.array([[10.0, 20.5], [30.25, 40.0]], np.float32)
LABELS = np.array([1, 0])
SCORES = np.array([0.75, 0.5])


def test_write_points_csv(tmp_path):
    path = tmp_path / 'out' / 'img.csv'
    write_points_csv(path, POINTS, LABELS, SCORES, CLASSES)
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    assert rows == [['x', 'y', 'class', 'class_name', 'score'],
                    ['10.00', '20.50', '1', 'other', '0.75'],
                    ['30.25', '40.00', '0', 'tumor', '0.5']]
    assert os.listdir(path.parent) == ['img.csv']  # no temporary file left
    # tensors, no scores, no points
    write_points_csv(path, torch.from_numpy(POINTS), torch.from_numpy(LABELS), None, CLASSES)
    assert open(path).read().splitlines()[1] == '10.00,20.50,1,other,'
    write_points_csv(path, np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0), CLASSES)
    assert open(path).read() == 'x,y,class,class_name,score\n'


def test_write_qupath_geojson(tmp_path):
    path = tmp_path / 'img.geojson'
    write_qupath_geojson(path, POINTS, LABELS, SCORES, CLASSES, palette=PALETTE)
    data = json.loads(path.read_text())
    assert data['type'] == 'FeatureCollection' and len(data['features']) == 2
    feat = data['features'][0]
    assert feat['type'] == 'Feature'
    # QuPath's origin is the corner of the first pixel: pixel centres are at +0.5
    assert feat['geometry'] == dict(type='Point', coordinates=[10.5, 21.0])
    props = feat['properties']
    assert props['objectType'] == 'annotation'
    assert props['classification'] == dict(name='other', color=[255, 0, 255])
    assert props['measurements'] == [dict(name='score', value=0.75)]
    assert os.listdir(tmp_path) == ['img.geojson']
    write_qupath_geojson(path, POINTS, LABELS, None, CLASSES, object_type='detection',
                         pixel_offset=0)
    feat = json.loads(path.read_text())['features'][1]
    assert feat['geometry']['coordinates'] == [30.25, 40.0]
    assert feat['properties']['objectType'] == 'detection'
    assert 'measurements' not in feat['properties']
    # default palette when none is given
    write_qupath_geojson(path, POINTS, LABELS, SCORES, CLASSES)
    colour = json.loads(path.read_text())['features'][1]['properties']['classification']['color']
    assert colour == list(get_palette(2)[0])


def test_export_bad_input_and_atomicity(tmp_path, monkeypatch):
    path = tmp_path / 'img.csv'
    path.write_text('old\n')
    with pytest.raises(ValueError, match='labels'):
        write_points_csv(path, POINTS, np.array([0, 2]), SCORES, CLASSES)
    with pytest.raises(ValueError, match='shape'):
        write_points_csv(path, np.zeros((2, 3)), LABELS, SCORES, CLASSES)
    with pytest.raises(ValueError, match='object_type'):
        write_qupath_geojson(tmp_path / 'a.geojson', POINTS, LABELS, SCORES, CLASSES,
                             object_type='cell')

    def broken_replace(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', broken_replace)
    with pytest.raises(OSError, match='disk full'):
        write_points_csv(path, POINTS, LABELS, SCORES, CLASSES)
    # the old file is intact and the temporary file is gone
    assert path.read_text() == 'old\n'
    assert os.listdir(tmp_path) == ['img.csv']


def test_qupath_geojson_round_trip_through_the_dataset_reader(tmp_path):
    """Export -> QuPath -> import keeps every point where it was (pixel-centre vs corner origin)."""
    from protocal.datasets.annotation_io import read_geojson_points
    path = tmp_path / 'img.geojson'
    write_qupath_geojson(path, POINTS, LABELS, SCORES, CLASSES, palette=PALETTE)
    raw = read_geojson_points(str(path))
    np.testing.assert_allclose(raw.xy, np.asarray(POINTS, dtype=np.float64), atol=1e-4)
