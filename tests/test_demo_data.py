"""Tests for the bundled demo data (data/demo), its converter and the classical baseline.

* every shipped file is listed in ``data/demo/MANIFEST.sha256`` with its sha256 (and in
  ``data/README.md``), and ``data/`` stays small;
* the CSVs parse, their points lie inside their tile and their classes are valid; the per-tile
  counts are the documented ones;
* the DSB2018 centroid CSVs are the centroids of the shipped masks;
* re-running the converter on the reassembled IHC tiles reproduces the shipped labels (up to the
  JPEG compression of the tiles, see data/README.md);
* the building blocks of ``protocal.apis.classical`` on tiny hand-made arrays;
* the classical baseline tool runs and returns finite scores.
"""
import csv
import hashlib
import importlib.util
import json
import math
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from protocal.apis.classical import (IHC_CLASSES, BlobPointDetector, dab_otsu_threshold,
                                     ihc_pseudo_labels, ring_dab_positivity, rgb_to_hed,
                                     segment_nuclei, tissue_mask)
from protocal.evaluation.functional import match_points

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = osp.join(ROOT, 'data')
DEMO = osp.join(DATA, 'demo')
REAL = osp.join(DATA, 'real')
IHC = osp.join(DEMO, 'ihc_points')
DSB = osp.join(DEMO, 'dsb2018_nuclei')
TILE = 256

#: documented per-tile counts (dab_positive, dab_negative) and split
IHC_TILES = {
    'ihc_y0000_x0000': ('train', 55, 4),
    'ihc_y0000_x0256': ('val', 46, 38),
    'ihc_y0256_x0000': ('train', 18, 45),
    'ihc_y0256_x0256': ('train', 18, 50),
}
DSB_IMAGES = {'65c8527c16a0': ('train', 111), '5c6eb9a47852': ('val', 60)}


def load_tool(rel_path):
    name = 'protocal_tool_' + osp.splitext(osp.basename(rel_path))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, 'tools', rel_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


converter = load_tool('dataset_converters/ihc_weak_labels.py')
baseline_tool = load_tool('analysis_tools/classical_baseline.py')


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_manifest():
    entries = {}
    with open(osp.join(DEMO, 'MANIFEST.sha256')) as f:
        for line in f:
            if line.strip():
                digest, rel = line.split(maxsplit=1)
                entries[rel.strip()] = digest
    return entries


def read_csv(path):
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['x', 'y', 'class'], f'{path}: header {rows[0]}'
    return [(float(x), float(y), c) for x, y, c in rows[1:]]


def ihc_tile_path(name):
    split = IHC_TILES[name][0]
    return osp.join(IHC, 'images', split, f'{name}.jpg')


# ------------------------------------------------------------------------------ shipped files
def test_manifest_matches_files():
    entries = read_manifest()
    on_disk = set()
    for dirpath, _, files in os.walk(DEMO):
        for name in files:
            rel = osp.relpath(osp.join(dirpath, name), DEMO)
            if rel != 'MANIFEST.sha256':
                on_disk.add(rel)
    assert on_disk == set(entries), 'files and MANIFEST.sha256 differ'
    for rel, digest in entries.items():
        assert sha256(osp.join(DEMO, rel)) == digest, f'sha256 mismatch: {rel}'
    readme = open(osp.join(DATA, 'README.md')).read()
    for rel, digest in entries.items():
        assert digest in readme, f'data/README.md does not list the sha256 of {rel}'


def folder_bytes(root):
    return sum(osp.getsize(osp.join(d, n)) for d, _, files in os.walk(root) for n in files)


def test_data_folder_small():
    demo = folder_bytes(DEMO)
    assert demo <= 500_000, f'data/demo holds {demo} bytes (limit 500 kB)'
    real = folder_bytes(REAL)
    assert real <= 20_000_000, f'data/real holds {real} bytes (limit 20 MB)'


def test_real_manifest_matches_files():
    """Every file under data/real is listed in its MANIFEST.sha256 with the right digest."""
    entries = {}
    with open(osp.join(REAL, 'MANIFEST.sha256'), encoding='utf-8') as f:
        for line in f:
            if line.strip():
                digest, rel = line.rstrip('\n').split(maxsplit=1)
                entries[osp.normpath(rel.strip())] = digest
    on_disk = set()
    for dirpath, _, files in os.walk(REAL):
        for name in files:
            rel = osp.normpath(osp.relpath(osp.join(dirpath, name), REAL))
            if rel != 'MANIFEST.sha256':
                on_disk.add(rel)
    assert on_disk - set(entries) == set(), 'files missing from data/real/MANIFEST.sha256'
    assert set(entries) - on_disk == set(), 'MANIFEST.sha256 lists files that do not exist'
    for rel, digest in entries.items():
        assert sha256(osp.join(REAL, rel)) == digest, f'sha256 mismatch: data/real/{rel}'


def test_ihc_layout_and_counts():
    total = {c: 0 for c in IHC_CLASSES}
    for name, (split, n_pos, n_neg) in IHC_TILES.items():
        img = ihc_tile_path(name)
        with Image.open(img) as im:
            assert im.size == (TILE, TILE) and im.mode == 'RGB'
        rows = read_csv(osp.join(IHC, 'annotations', split, f'{name}.csv'))
        for x, y, c in rows:
            assert 0 <= x < TILE and 0 <= y < TILE, f'{name}: point ({x}, {y}) outside the tile'
            assert c in IHC_CLASSES, f'{name}: unknown class {c}'
        assert sum(c == 'dab_positive' for _, _, c in rows) == n_pos
        assert sum(c == 'dab_negative' for _, _, c in rows) == n_neg
        for c in IHC_CLASSES:
            total[c] += sum(r[2] == c for r in rows)
    assert total == {'dab_positive': 137, 'dab_negative': 137}  # README reference figures
    assert sorted(os.listdir(osp.join(IHC, 'images', 'val'))) == ['ihc_y0000_x0256.jpg']


def test_dsb_layout_and_centroids():
    from scipy import ndimage as ndi
    for stem, (split, n_nuclei) in DSB_IMAGES.items():
        img = np.asarray(Image.open(osp.join(DSB, 'images', split, f'{stem}.png')))
        mask = np.asarray(Image.open(osp.join(DSB, 'masks', split, f'{stem}.png')))
        assert img.shape == (256, 320, 3) and img.dtype == np.uint8
        assert mask.shape == (256, 320) and mask.dtype == np.uint16
        ids = np.unique(mask)
        ids = ids[ids > 0]
        assert len(ids) == n_nuclei
        rows = read_csv(osp.join(DSB, 'annotations', split, f'{stem}.csv'))
        assert {c for _, _, c in rows} == {'nucleus'}
        got = np.array(sorted((y, x) for x, y, _ in rows))
        cy_cx = np.array(ndi.center_of_mass(np.ones(mask.shape), mask, ids))
        want = np.array(sorted(map(tuple, cy_cx)))
        np.testing.assert_allclose(got, want, atol=0.0051)


# ------------------------------------------------------------------------------ converter
def reassembled_ihc():
    out = np.zeros((2 * TILE, 2 * TILE, 3), np.uint8)
    for name in IHC_TILES:
        y0, x0 = int(name[5:9]), int(name[11:15])
        out[y0:y0 + TILE, x0:x0 + TILE] = np.asarray(Image.open(ihc_tile_path(name)))
    return out


def test_converter_reproduces_shipped_labels(tmp_path):
    """The tiles are JPEG (q=97, 4:4:4) of the lossless original the labels were made from, so the
    re-run on the reassembled tiles agrees up to a few watershed splits: checked as counts within
    3 % and >= 90 % of the shipped points found again within 2 px with the same class."""
    src = tmp_path / 'ihc.png'
    Image.fromarray(reassembled_ihc()).save(src)
    summary = converter.convert(str(src), str(tmp_path / 'out'), tile_size=TILE, val_tiles=[1])
    assert abs(summary['num_nuclei'] - 274) <= 0.03 * 274
    assert abs(summary['num_positive'] - 137) <= 0.03 * 137
    assert [t['split'] for t in summary['tiles']] == ['train', 'val', 'train', 'train']
    found = total = 0
    for name, (split, _, _) in IHC_TILES.items():
        shipped = read_csv(osp.join(IHC, 'annotations', split, f'{name}.csv'))
        rerun = read_csv(str(tmp_path / 'out' / 'annotations' / split / f'{name}.csv'))
        for c in IHC_CLASSES:
            a = np.array([(x, y) for x, y, k in shipped if k == c]).reshape(-1, 2)
            b = np.array([(x, y) for x, y, k in rerun if k == c]).reshape(-1, 2)
            found += len(match_points(a, b, 2.0, method='hungarian')[0])
            total += len(a)
        # the re-written tile is lossless PNG here: identical pixels to the shipped JPEG decode
        png = np.asarray(Image.open(tmp_path / 'out' / 'images' / split / f'{name}.png'))
        np.testing.assert_array_equal(png, np.asarray(Image.open(ihc_tile_path(name))))
    assert found >= 0.9 * total, f'only {found}/{total} shipped points reproduced'


def test_converter_tile_points_hand_computed():
    pts = np.array([[255.996, 10.0], [256.0, 300.5], [0.004, 0.0], [511.994, 511.994]])
    got = converter.tile_points(pts, 256)
    # 255.996 rounds to 256.00 -> next tile; 511.994 rounds to 511.99 -> last tile
    assert got == [(0, 1, 0.0, 10.0), (1, 1, 0.0, 44.5), (0, 0, 0.0, 0.0), (1, 1, 255.99, 255.99)]
    with pytest.raises(ValueError, match='non-negative'):
        converter.tile_points(np.array([[-1.0, 2.0]]), 256)


def test_converter_bad_input(tmp_path):
    src = tmp_path / 'odd.png'
    Image.fromarray(np.full((300, 256, 3), 200, np.uint8)).save(src)
    with pytest.raises(ValueError, match='not a multiple of tile_size'):
        converter.convert(str(src), str(tmp_path / 'o'), tile_size=256)
    src2 = tmp_path / 'ok.png'
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(src2)
    with pytest.raises(ValueError, match='out of range'):
        converter.convert(str(src2), str(tmp_path / 'o'), tile_size=256, val_tiles=[1])
    with pytest.raises(FileNotFoundError, match='missing.png'):
        converter.convert(str(tmp_path / 'missing.png'), str(tmp_path / 'o'))


# ------------------------------------------------------------------------------ classical blocks
def test_segment_nuclei_two_disks():
    h = np.zeros((40, 60))
    yy, xx = np.mgrid[:40, :60]
    h[(yy - 20)**2 + (xx - 15)**2 <= 36] = 1.0  # two disks of radius 6 (113 px)
    h[(yy - 20)**2 + (xx - 42)**2 <= 36] = 1.0
    h[0, 0] = 0.5
    labels = segment_nuclei(h, min_area=20)
    assert labels.max() == 2
    assert labels[20, 15] != labels[20, 42] and labels[20, 15] > 0 and labels[20, 42] > 0
    assert labels[0, 59] == 0
    # min_area above the disk size removes both
    assert segment_nuclei(h, min_area=200).max() == 0


def test_ring_dab_positivity_hand_computed():
    labels = np.zeros((9, 9), np.int32)
    labels[4, 4] = 1  # one-pixel nucleus in the centre
    dab = np.zeros((9, 9))
    dab[4, 4] = 5.0
    dab[3, 4] = 1.0  # one ring pixel of the 1-px ring (4-neighbours + diagonals within 1 px)
    calls = ring_dab_positivity(labels, dab, dab_threshold=0.2, ring_px=1)
    # expand_labels(distance=1) adds the 4 edge neighbours (distance 1); diagonals are at 1.41
    np.testing.assert_allclose(calls.ring_dab, [0.25])
    np.testing.assert_allclose(calls.nuclear_dab, [5.0])
    np.testing.assert_allclose(calls.points, [[4.0, 4.0]])
    assert calls.positive.tolist() == [True]
    assert ring_dab_positivity(labels, dab, 0.3, ring_px=1).positive.tolist() == [False]
    with pytest.raises(ValueError, match='consecutive'):
        ring_dab_positivity(labels * 2, dab, 0.2)
    with pytest.raises(ValueError, match='shape'):
        ring_dab_positivity(labels, dab[:5], 0.2)
    empty = ring_dab_positivity(np.zeros((5, 5), np.int32), np.zeros((5, 5)), 0.1)
    assert len(empty) == 0 and empty.points.shape == (0, 2)


def test_classical_bad_input():
    with pytest.raises(ValueError, match='RGB'):
        rgb_to_hed(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match='uint8 or float'):
        rgb_to_hed(np.zeros((8, 8, 3), np.int32))
    with pytest.raises(ValueError, match='within'):
        rgb_to_hed(np.full((8, 8, 3), 2.0))
    white = rgb_to_hed(np.full((8, 8, 3), 255, np.uint8))
    assert not tissue_mask(white).any()
    with pytest.raises(ValueError, match='no tissue'):
        dab_otsu_threshold(white)
    with pytest.raises(ValueError, match='classes'):
        BlobPointDetector(classes=('a', ))
    with pytest.raises(ValueError, match='min_distance'):
        BlobPointDetector(min_distance=0)


def test_pipeline_on_val_tile_is_sane():
    rgb = np.asarray(Image.open(ihc_tile_path('ihc_y0000_x0256')))
    res = ihc_pseudo_labels(rgb)
    assert 50 <= len(res.calls) <= 120
    assert np.isfinite(res.calls.ring_dab).all() and 0 < res.dab_threshold < 1
    assert set(res.class_indices().tolist()) == {0, 1}


def test_blob_detector_output_contract():
    rgb = np.asarray(Image.open(ihc_tile_path('ihc_y0000_x0256')))
    det = BlobPointDetector()
    out = det(rgb)
    n = len(out['points'])
    assert n > 20
    assert out['points'].dtype == np.float32 and out['points'].shape == (n, 2)
    assert out['labels'].dtype == np.int64 and set(out['labels'].tolist()) <= {0, 1}
    assert out['scores'].dtype == np.float32 and np.all(np.diff(out['scores']) <= 0)
    assert (out['points'] >= 0).all() and (out['points'] <= TILE - 1).all()
    # a fixed DAB threshold above every value calls everything negative
    assert set(BlobPointDetector(dab_threshold=10.0)(rgb)['labels'].tolist()) == {1}
    # more separation -> fewer peaks
    assert len(BlobPointDetector(min_distance=12)(rgb)['points']) < n
    # a blank (white) image: no detection, no error
    blank = det(np.full((32, 32, 3), 255, np.uint8))
    assert blank['points'].shape == (0, 2) and blank['labels'].shape == (0, )
    assert blank['scores'].dtype == np.float32


# ------------------------------------------------------------------------------ baseline tool
def test_classical_baseline_tool(tmp_path):
    out = tmp_path / 'classical_val.json'
    result = baseline_tool.main([IHC, '--split', 'val', '--radius', '6', '--out', str(out)])
    saved = json.loads(out.read_text())
    for key in ('dab_positive_f1', 'dab_negative_f1', 'mF1', 'det_f1', 'det_recall'):
        assert math.isfinite(saved[key]) and 0 < saved[key] <= 1, key
        assert saved[key] == pytest.approx(result[key])
    assert saved['images'][0]['num_gt'] == 84
    assert saved['meta']['radius'] == 6.0 and saved['meta']['mode'] == 'ocelot'
    # the trivial baseline is far from the pseudo labels' own pipeline (which would give ~1)
    assert saved['mF1'] < 0.9

    agn = baseline_tool.main([DSB, '--split', 'val', '--agnostic', '--mode', 'reference'])
    assert math.isfinite(agn['nucleus_f1']) and agn['images'][0]['num_gt'] == 60


def test_classical_baseline_tool_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r'65c8527c16a0\.csv.*unknown class'):
        baseline_tool.main([DSB, '--split', 'train'])  # class 'nucleus' without --agnostic
    (tmp_path / 'images' / 'val').mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / 'images' / 'val' / 'a.png')
    with pytest.raises(FileNotFoundError, match='annotation not found'):
        baseline_tool.main([str(tmp_path), '--split', 'val'])
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        baseline_tool.main([str(tmp_path), '--split', 'test'])
