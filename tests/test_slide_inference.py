"""Whole-slide inference (issue 14): reading, level choice, tissue, tiling/dedup, outputs, resume,
bad inputs, the tools.

Most tests use a pixel-wise stub model (probability of a class = darkness of the pixel in that
class's colour), so that a tiled run must equal a tile-free run exactly and detections land on
known positions. One test runs a tiny randomly initialised PointDetector through the same path,
and one runs ``tools/infer_slide.py`` end to end.
"""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from protocal.apis import (MissingResolutionError, OutputFolderError, SlideReadError, WholeSlide,
                           choose_level, detect_tissue, infer_slide, infer_slides,
                           write_qupath_geojson, write_qupath_geojson_stream)
from protocal.codecs import PointHeatmapCodec

SVS = 'data/real/slides/cmu_small_region.svs'
TISSUE_RGB = (235, 170, 205)   # pink "eosin" background: saturated, not dark enough for a peak


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def write_pyramid_tiff(path, rgb, mpp=0.25, downsamples=(1, 2, 4), tile=128,
                       compression='zlib'):
    """A pyramidal tiled TIFF that OpenSlide reads as 'generic-tiff': reduced levels are further
    pages with NewSubfileType=1; resolution in pixels per centimetre (None: no metadata)."""
    import tifffile
    with tifffile.TiffWriter(str(path)) as tw:
        for ds in downsamples:
            level = rgb if ds == 1 else block_mean(rgb, ds)
            kwargs = {}
            if mpp is not None:
                kwargs = dict(resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)),
                              resolutionunit='CENTIMETER')
            tw.write(np.ascontiguousarray(level), tile=(tile, tile), photometric='rgb',
                     compression=compression, subfiletype=0 if ds == 1 else 1, metadata=None,
                     **kwargs)
    return path


def block_mean(rgb, ds):
    h, w = rgb.shape[0] // ds * ds, rgb.shape[1] // ds * ds
    x = rgb[:h, :w].astype(np.float32).reshape(h // ds, ds, w // ds, ds, 3).mean((1, 3))
    return np.round(x).astype(np.uint8)


def blob_image(shape, tissue_box, blobs, sigma=2.0):
    """White image, pink tissue rectangle, Gaussian blobs: class 0 red-ish (G and B drop),
    class 1 blue-ish (R and G drop)."""
    h, w = shape
    img = np.full((h, w, 3), 255, np.float32)
    y0, y1, x0, x1 = tissue_box
    img[y0:y1, x0:x1] = TISSUE_RGB
    yy, xx = np.mgrid[0:h, 0:w]
    for x, y, c in blobs:
        r = int(4 * sigma) + 1
        sl = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        g = np.exp(-((xx[sl] - x)**2 + (yy[sl] - y)**2) / (2 * sigma**2))
        chans = (1, 2) if c == 0 else (0, 1)
        for ch in chans:
            img[sl][..., ch] *= 1 - g
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


class StubTileModel:
    """Pixel-wise stub: class 0 = darkness of G where R >= B, class 1 = darkness of G where B > R.
    No spatial context, so tiles and the whole image give identical probabilities."""

    classes = ('red_cell', 'blue_cell')
    palette = [(220, 20, 60), (30, 60, 220)]
    fingerprint = 'stub-v1'

    def __init__(self, min_distance=4, score_thr=0.5):
        self.codec = PointHeatmapCodec(num_classes=2, radius=4, score_thr=score_thr,
                                       min_distance=min_distance)
        self.calls = 0

    def __call__(self, tiles):
        self.calls += 1
        x = tiles.float() / 255
        dark = 1 - x[..., 1]
        red = (x[..., 0] >= x[..., 2]).float()
        fg0, fg1 = dark * red, dark * (1 - red)
        return torch.stack([1 - fg0 - fg1, fg0, fg1], 1)


# 1000 x 1200 level 0: tissue in a big box; blobs on a jittered grid, some exactly on the
# ownership borders of 128 px tiles with overlap 32 (stride 96: borders at 112, 208, 304, ...)
SHAPE = (1000, 1200)
TISSUE_BOX = (100, 900, 100, 1100)


def make_blobs(seed=0):
    rng = np.random.default_rng(seed)
    blobs = []
    for y in range(130, 880, 24):
        for x in range(130, 1080, 24):
            blobs.append((x + int(rng.integers(-4, 5)), y + int(rng.integers(-4, 5)),
                          int(rng.integers(0, 2))))
    # cells exactly on / next to ownership borders
    for i, b in enumerate((208, 304, 400, 496)):
        blobs += [(b, 140 + 9 * i, 0), (b - 1, 860 - 9 * i, 1), (150 + 9 * i, b, 1)]
    keep, seen = [], []
    for x, y, c in blobs:   # keep blobs >= 9 px apart
        if all(max(abs(x - a), abs(y - b)) >= 9 for a, b in seen):
            keep.append((x, y, c))
            seen.append((x, y))
    return keep


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp('slides')
    blobs = make_blobs()
    rgb = blob_image(SHAPE, TISSUE_BOX, blobs)
    path = write_pyramid_tiff(root / 'synthetic.tif', rgb, mpp=0.25)
    return dict(path=path, blobs=np.array(blobs), rgb=rgb, root=root)


def read_csv(path):
    rows = np.genfromtxt(path, delimiter=',', names=True, dtype=None, encoding='utf-8')
    rows = np.atleast_1d(rows)
    if rows.size == 0 or rows.dtype.names is None:
        return np.zeros((0, 2)), np.zeros(0, int)
    return np.stack([rows['x'], rows['y']], 1).astype(float), rows['class'].astype(int)


def run(model, path, out, **kw):
    kw.setdefault('tile_size', 128)
    kw.setdefault('overlap', 32)
    kw.setdefault('num_workers', 0)
    kw.setdefault('progress', False)
    return infer_slide(model, path, out, **kw)


# ------------------------------------------------------------------------------------------------
# reading and level choice
# ------------------------------------------------------------------------------------------------
def test_read_bundled_svs_and_level_choice():
    with WholeSlide(SVS) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.vendor == 'aperio'
        assert slide.mpp == pytest.approx(0.499)
        tile = slide.read(0, 100, 200, 64, 32)
        assert tile.shape == (32, 64, 3) and tile.dtype == np.uint8
        edge = slide.read(0, 2200, 2950, 40, 40)   # beyond the border: white
        assert (edge[20:, 20:] == 255).all()
        thumb, ds = slide.thumbnail(1024)
        assert ds == 3 and thumb.shape == (989, 740, 3)
        # a thumbnail pixel is the mean of its 3 x 3 level-0 block
        block = slide.read(0, 300, 600, 3, 3).reshape(-1, 3).mean(0)
        assert np.abs(thumb[200, 100].astype(float) - block).max() <= 0.5 + 1e-6
        same = choose_level(slide, 0.5)          # 0.499 within 10%: level 0 as is
        assert (same.level, same.scale, same.size) == (0, 1.0, (2220, 2967))
        half = choose_level(slide, 1.0)          # single-level slide: resampled
        assert half.level == 0 and half.scale == pytest.approx(0.499)
        assert half.size == (1108, 1481)
    with WholeSlide(SVS, mpp=0.25) as slide:     # override
        assert slide.mpp == 0.25 and slide.metadata_mpp == pytest.approx(0.499)


def test_pyramid_tiff_levels(synthetic):
    with WholeSlide(synthetic['path']) as slide:
        assert slide.vendor == 'generic-tiff'
        assert slide.level_count == 3 and slide.level_downsamples == [1.0, 2.0, 4.0]
        assert slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(slide.read(1, 40, 30, 20, 10),
                                      block_mean(synthetic['rgb'], 2)[30:40, 40:60])
        assert choose_level(slide, 0.25).level == 0
        c = choose_level(slide, 0.5)
        assert (c.level, c.scale, c.size) == (1, 1.0, (600, 500))
        assert choose_level(slide, 1.05).level == 2           # within 10% of level 2
        c = choose_level(slide, 0.8)   # between levels: finer level 1, resampled by 0.5/0.8
        assert c.level == 1 and c.scale == pytest.approx(0.625) and c.mpp == pytest.approx(0.8)
        with pytest.warns(UserWarning, match='upsampled'):
            c = choose_level(slide, 0.2)
        assert c.level == 0 and c.scale == pytest.approx(1.25)
        # level -> level 0 mapping: pixel centres
        np.testing.assert_allclose(c.to_level0(np.array([[0.0, 0.0]])), [[-0.1, -0.1]])


# ------------------------------------------------------------------------------------------------
# tissue
# ------------------------------------------------------------------------------------------------
def test_tissue_mask_bundled_and_synthetic(synthetic):
    with WholeSlide(SVS) as slide:
        thumb, ds = slide.thumbnail(1024)
    mask = detect_tissue(thumb, mpp=0.499 * ds)
    frac = mask.mean()
    assert 0.25 < frac < 0.7, frac           # skin section on a mostly white slide
    assert not mask[:60, :200].any()         # the top-left corner is glass
    assert mask[700, 300]                    # epidermis
    rgb = synthetic['rgb'][::4, ::4]
    mask = detect_tissue(rgb, mpp=1.0)
    y0, y1, x0, x1 = (v // 4 for v in TISSUE_BOX)
    assert mask[y0 + 15:y1 - 15, x0 + 15:x1 - 15].all()   # corners are rounded by the opening
    assert not mask[:y0 - 3].any() and not mask[:, x1 + 3:].any()
    blank = np.full((200, 300, 3), 250, np.uint8)
    blank += np.random.default_rng(0).integers(0, 5, blank.shape).astype(np.uint8)
    assert not detect_tissue(blank, mpp=8.0).any()


# ------------------------------------------------------------------------------------------------
# tiling: every cell once, equal to a tile-free run
# ------------------------------------------------------------------------------------------------
def test_border_dedup_synthetic_none_lost_none_twice(synthetic, tmp_path):
    model = StubTileModel()
    rec = run(model, synthetic['path'], tmp_path, num_workers=2, batch_size=3)
    assert rec['status'] == 'done' and rec['tiles_skipped'] > 0   # background tiles skipped
    pts, cls = read_csv(tmp_path / 'synthetic' / 'cells.csv')
    blobs = synthetic['blobs']
    assert len(pts) == len(blobs) == rec['cells']
    order_p = np.lexsort((pts[:, 0], pts[:, 1]))
    order_b = np.lexsort((blobs[:, 0], blobs[:, 1]))
    np.testing.assert_array_equal(pts[order_p], blobs[order_b, :2].astype(float))
    np.testing.assert_array_equal(cls[order_p], blobs[order_b, 2])
    counts = json.loads((tmp_path / 'synthetic' / 'counts.json').read_text())['counts']
    assert counts == {'red_cell': int((blobs[:, 2] == 0).sum()),
                      'blue_cell': int((blobs[:, 2] == 1).sum())}


def test_border_dedup_real_crop_equals_tile_free_run(tmp_path):
    """Real H&E content: tiles of 128 px vs one tile covering the whole crop."""
    with WholeSlide(SVS) as slide:
        crop = slide.read(0, 700, 1900, 700, 560)
    path = write_pyramid_tiff(tmp_path / 'crop.tif', crop, mpp=0.499, downsamples=(1,))
    model = StubTileModel(min_distance=5, score_thr=0.6)
    tiled = run(model, path, tmp_path / 'tiled', tile_size=128, overlap=32, min_tissue=-1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # overlap 0 < 2 * (min_distance + exclude_border)
        whole = run(model, path, tmp_path / 'whole', tile_size=704, overlap=0, min_tissue=-1)
    assert tiled['tiles'] > 20 and whole['tiles'] == 1
    a = (tmp_path / 'tiled' / 'crop' / 'cells.csv').read_text()
    b = (tmp_path / 'whole' / 'crop' / 'cells.csv').read_text()
    assert a == b and tiled['cells'] > 100


# ------------------------------------------------------------------------------------------------
# coordinates
# ------------------------------------------------------------------------------------------------
def test_geojson_level0_coordinates(synthetic, tmp_path):
    model = StubTileModel()
    blobs = synthetic['blobs']
    x, y, c = blobs[len(blobs) // 2]
    run(model, synthetic['path'], tmp_path / 'l0')
    gj = json.loads((tmp_path / 'l0' / 'synthetic' / 'cells.geojson').read_text())
    coords = np.array([f['geometry']['coordinates'] for f in gj['features']])
    hit = np.flatnonzero((coords == [x + 0.5, y + 0.5]).all(1))   # QuPath: pixel-corner origin
    assert len(hit) == 1
    feat = gj['features'][hit[0]]
    assert feat['properties']['objectType'] == 'detection'
    assert feat['properties']['classification'] == dict(
        name=StubTileModel.classes[c], color=list(StubTileModel.palette[c]))
    assert 0.5 <= feat['properties']['measurements'][0]['value'] <= 1
    # at 0.5 um/px the model reads level 1 (downsample 2); points come back in level-0 pixels
    rec = run(model, synthetic['path'], tmp_path / 'l1', target_mpp=0.5, tile_size=96,
              overlap=24)
    assert rec['level'] == 1 and rec['scale'] == 1.0
    pts, _ = read_csv(tmp_path / 'l1' / 'synthetic' / 'cells.csv')
    d = np.abs(pts - [x, y]).max(1)
    assert d.min() <= 1.0
    # every blob is found within a level-1 pixel (2 level-0 px) of where it was drawn
    near = np.abs(pts[:, None] - blobs[None, :, :2]).max(2).min(0)
    assert (near <= 2.0).mean() > 0.95


def test_resampled_level_maps_back_to_level0(synthetic, tmp_path):
    """0.4 um/px model on a 0.25/0.5/1.0 um/px pyramid: level 0 resampled by 0.625."""
    rec = run(StubTileModel(min_distance=3), synthetic['path'], tmp_path, target_mpp=0.4,
              tile_size=96, overlap=24)
    assert rec['level'] == 0 and rec['scale'] == pytest.approx(0.625)
    pts, _ = read_csv(tmp_path / 'synthetic' / 'cells.csv')
    blobs = synthetic['blobs'][:, :2]
    dist = np.abs(pts[:, None] - blobs[None]).max(2)
    assert (dist.min(0) <= 1.5).mean() > 0.95       # found where drawn (level-0 px)
    assert (dist.min(1) <= 1.5).mean() > 0.95       # and nothing else


def test_geojson_stream_writer_matches_export(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 5000, (50, 2))
    labels = rng.integers(0, 2, 50)
    scores = rng.uniform(0, 1, 50).astype(np.float32)
    for obj in ('annotation', 'detection'):
        write_qupath_geojson(tmp_path / 'a.geojson', pts, labels, scores, ['a', 'b'],
                             object_type=obj)
        write_qupath_geojson_stream(tmp_path / 'b.geojson', pts, labels, scores, ['a', 'b'],
                                    object_type=obj, chunk=7)
        assert (tmp_path / 'a.geojson').read_text() == (tmp_path / 'b.geojson').read_text()
    write_qupath_geojson_stream(tmp_path / 'e.geojson', np.zeros((0, 2)), [], [], ['a'])
    assert json.loads((tmp_path / 'e.geojson').read_text())['features'] == []


# ------------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------------
def test_interrupted_run_resumes_to_identical_outputs(synthetic, tmp_path):
    model = StubTileModel()
    full = run(model, synthetic['path'], tmp_path / 'full', chunk_tiles=8, batch_size=4)

    class Interrupt(Exception):
        pass

    def stop_after_two(done, total):
        if done >= 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(model, synthetic['path'], tmp_path / 'cut', chunk_tiles=8, batch_size=4,
            on_chunk=stop_after_two)
    state = json.loads((tmp_path / 'cut/synthetic/.partial/state.json').read_text())
    assert state['tiles_done'] == 16 and state['chunks'] == 2
    assert not (tmp_path / 'cut/synthetic/counts.json').exists()
    model.calls = 0
    resumed = run(model, synthetic['path'], tmp_path / 'cut', chunk_tiles=8, batch_size=4,
                  resume=True)
    assert resumed['tiles_resumed'] == 16
    assert model.calls == -(-(full['tiles'] - 16) // 4)      # only the remaining tiles ran
    for name in ('cells.csv', 'cells.geojson', 'tissue_mask.png', 'density.png'):
        assert ((tmp_path / 'full/synthetic' / name).read_bytes() ==
                (tmp_path / 'cut/synthetic' / name).read_bytes()), name
    assert resumed['counts'] == full['counts']
    assert not (tmp_path / 'cut/synthetic/.partial').exists()
    # a finished slide is skipped
    model.calls = 0
    again = run(model, synthetic['path'], tmp_path / 'cut', chunk_tiles=8, batch_size=4,
                resume=True)
    assert again['status'] == 'skipped' and model.calls == 0
    # other settings -> computed again
    other = run(model, synthetic['path'], tmp_path / 'cut', chunk_tiles=8, batch_size=4,
                resume=True, overlap=40)
    assert other['status'] == 'done' and model.calls > 0


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_corrupt_slide_reported_others_continue(synthetic, tmp_path):
    bad = tmp_path / 'broken.svs'
    bad.write_bytes(b'II*\x00' + os.urandom(2000))
    missing = tmp_path / 'missing.ndpi'
    with pytest.raises(SlideReadError, match='broken.svs'):
        WholeSlide(bad)
    records = infer_slides(StubTileModel(), [bad, synthetic['path'], missing], tmp_path / 'out',
                           log=None, tile_size=128, overlap=32, num_workers=0, progress=False)
    assert [r['status'] for r in records] == ['failed', 'done', 'failed']
    assert 'broken.svs' in records[0]['error'] and 'SlideReadError' in records[0]['error']
    assert 'missing.ndpi' in records[2]['error']
    summary = (tmp_path / 'out' / 'cohort_summary.csv').read_text().splitlines()
    assert summary[0].startswith('slide,status,cells,n_red_cell,n_blue_cell')
    assert len(summary) == 4 and ',failed,' in summary[1] and ',done,' in summary[2]
    assert json.loads((tmp_path / 'out' / 'cohort_summary.json').read_text())[0]['status'] == \
        'failed'


def test_missing_resolution_needs_mpp(tmp_path):
    rgb = blob_image((400, 400), (20, 380, 20, 380), [(150, 150, 0)])
    path = write_pyramid_tiff(tmp_path / 'nompp.tif', rgb, mpp=None, downsamples=(1,))
    model = StubTileModel()
    with pytest.raises(MissingResolutionError, match=r'nompp\.tif.*--mpp'):
        run(model, path, tmp_path / 'out')
    rec = run(model, path, tmp_path / 'out', mpp=0.5)
    assert rec['cells'] == 1 and rec['mpp'] == 0.5
    records = infer_slides(model, [path], tmp_path / 'out2', log=None, num_workers=0,
                           progress=False)
    assert records[0]['status'] == 'failed' and 'MissingResolutionError' in records[0]['error']


def test_no_tissue_gives_empty_outputs_and_warning(tmp_path):
    path = write_pyramid_tiff(tmp_path / 'glass.tif', np.full((400, 500, 3), 247, np.uint8),
                              mpp=0.5, downsamples=(1, 2))
    model = StubTileModel()
    with pytest.warns(UserWarning, match='no tissue'):
        rec = run(model, path, tmp_path)
    assert rec['status'] == 'done' and rec['cells'] == 0 and rec['tiles'] == 0
    assert 'no tissue' in rec['warning'] and model.calls == 0
    out = tmp_path / 'glass'
    assert (out / 'cells.csv').read_text() == 'x,y,class,class_name,score\n'
    assert json.loads((out / 'cells.geojson').read_text())['features'] == []
    for name in ('tissue_mask.png', 'density.png', 'counts.json'):
        assert (out / name).stat().st_size > 0


def test_unwritable_output_folder(synthetic, tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(OutputFolderError, match='a_file'):
        infer_slides(StubTileModel(), [synthetic['path']], blocker / 'out', log=None)


# ------------------------------------------------------------------------------------------------
# a real (tiny, random) PointDetector and the command-line tool
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile('configs/_base_/models/heatmap_point_r18_fpn.py')
    cfg.model.head.codec.score_thr = 0.3
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    root = tmp_path_factory.mktemp('ckpt')
    cfg_path = root / 'tiny.py'
    cfg.dump(str(cfg_path))
    ckpt = root / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=('tumour', 'other')))), ckpt)
    return cfg_path, ckpt


def test_point_detector_and_cli(synthetic, tiny_checkpoint, tmp_path):
    from protocal.apis import init_point_detector
    cfg_path, ckpt = tiny_checkpoint
    model = init_point_detector(str(cfg_path), str(ckpt))
    with WholeSlide(SVS) as slide:
        crop = slide.read(0, 800, 2000, 300, 260)
    path = write_pyramid_tiff(tmp_path / 'he.tif', crop, mpp=0.499, downsamples=(1,))
    rec = run(model, path, tmp_path / 'api', tile_size=128, overlap=32, batch_size=2,
              min_tissue=-1)
    pts, _ = read_csv(tmp_path / 'api' / 'he' / 'cells.csv')
    assert rec['status'] == 'done' and rec['tiles'] == 9 and len(pts) == rec['cells']
    assert set(rec['counts']) == {'tumour', 'other'}
    if len(pts):
        assert pts.min() >= -0.5 and (pts.max(0) < [300, 260]).all()

    import importlib.util
    spec = importlib.util.spec_from_file_location('infer_slide', 'tools/infer_slide.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    bad = tmp_path / 'bad.svs'
    bad.write_bytes(b'not a slide')
    code = tool.main([str(cfg_path), str(ckpt), str(path), str(bad), '--out-dir',
                      str(tmp_path / 'cli'), '--tile-size', '128', '--overlap', '32',
                      '--workers', '1', '--batch-size', '2', '--no-progress',
                      '--min-tissue', '-1'])
    assert code == 1   # one slide failed, the other is done
    assert (tmp_path / 'cli' / 'he' / 'cells.csv').read_text() == \
        (tmp_path / 'api' / 'he' / 'cells.csv').read_text()
    summary = (tmp_path / 'cli' / 'cohort_summary.csv').read_text()
    assert 'bad.svs' in summary and ',failed,' in summary
    # resume: both outputs kept, the done slide skipped
    code = tool.main([str(cfg_path), str(ckpt), str(path), '--out-dir', str(tmp_path / 'cli'),
                      '--tile-size', '128', '--overlap', '32', '--workers', '0',
                      '--batch-size', '2', '--no-progress', '--resume', '--min-tissue', '-1'])
    assert code == 0
    assert json.loads((tmp_path / 'cli' / 'cohort_summary.json').read_text())[0]['status'] == \
        'skipped'
