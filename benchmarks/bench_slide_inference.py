#!/usr/bin/env python
"""Whole-slide inference: overhead vs the bare model, memory vs slide size, throughput (issue 14).

Builds two pyramidal tiled-JPEG TIFFs (generic TIFF, quality 90, 256 px tiles, levels 1/2/4/8,
0.499 um/px) from the bundled real slide ``data/real/slides/cmu_small_region.svs`` by mirrored
tiling, in a temporary folder (nothing is written to the repository): a small slide of ``--size``
px square and a large one with 4x the pixels (2x the side). Then, each in a fresh process (peak
RSS is per process):

* ``small``: :func:`protocal.apis.infer_slide` on the small slide (tissue mask, DataLoader
  readers, model, decode, border merge, all writers), timed end to end, and its peak RSS.
* ``large``: the same on the 4x slide (peak RSS compared with the small one's, recorded before
  the next step); then the *bare model forward* (``DetectorTileModel``: preprocessing + backbone
  + head + softmax, same batch size) on the very same tiles, read into memory beforehand, timed.
  Overhead = (pipeline - bare) / pipeline, on the large slide (fixed per-slide costs included).

Also printed: tiles/s, cells/s and the projected time for a 100,000 x 100,000 px slide fully
covered by tissue (tiles of the same geometry at the measured s/tile).

Usage (CPU, 2 threads, under the CPU lock)::

    flock /tmp/protocal-cpu.lock env OMP_NUM_THREADS=2 python benchmarks/bench_slide_inference.py \
        --config CONFIG --checkpoint CHECKPOINT [--size 2048] [--workers 2]

Without ``--checkpoint`` the model has random weights (the cell counts are then meaningless and
decoding costs differ from a trained model).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

SVS = 'data/real/slides/cmu_small_region.svs'


def build_tiff(path: str, side: int) -> None:
    import numpy as np
    import tifffile
    from protocal.apis import WholeSlide
    with WholeSlide(SVS) as slide:
        w, h = slide.dimensions
        rgb = slide.read(0, 0, 0, w, h)
    reps = (-(-side // h) + 1, -(-side // w) + 1)
    rows = []
    for i in range(reps[0]):
        row = [rgb[::(-1 if i % 2 else 1), ::(-1 if j % 2 else 1)] for j in range(reps[1])]
        rows.append(np.concatenate(row, 1))
    mosaic = np.ascontiguousarray(np.concatenate(rows, 0)[:side, :side])
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        level = mosaic
        for ds in (1, 2, 4, 8):
            if ds > 1:
                hh, ww = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
                level = level[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2, 3).mean((1, 3))
                level = np.round(level).astype(np.uint8)
            tw.write(level, tile=(256, 256), photometric='rgb', compression='jpeg',
                     compressionargs=dict(level=90), subfiletype=0 if ds == 1 else 1,
                     resolution=(1e4 / (0.499 * ds), 1e4 / (0.499 * ds)),
                     resolutionunit='CENTIMETER', metadata=None)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    import numpy as np
    import torch
    from protocal.apis import DetectorTileModel, WholeSlide, infer_slide, init_point_detector
    from protocal.apis.slide_inference import SlideTileDataset, plan_tiles
    from protocal.apis.slide_reader import choose_level
    from protocal.apis.slide_tissue import TissueIntegral, detect_tissue
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 2)))
    model = init_point_detector(args.config, args.checkpoint)
    tile_model = DetectorTileModel(model)
    with torch.no_grad():   # warm-up (allocator, oneDNN kernels)
        tile_model(torch.full((args.batch_size, args.tile, args.tile, 3), 200, dtype=torch.uint8))
    baseline = rss_mb()
    out = tempfile.mkdtemp(prefix='bench_slide_out_')
    t0 = time.perf_counter()
    rec = infer_slide(tile_model, args.slide, out, tile_size=args.tile, batch_size=args.batch_size,
                      num_workers=args.workers, progress=False)
    pipeline = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    result = dict(kind=args.kind, seconds=pipeline, tiles=rec['tiles'],
                  tiles_total=rec['tiles_total'], cells=rec['cells'], baseline_mb=baseline,
                  peak_mb=rss_mb(), inference_seconds=rec['inference_seconds'],
                  worker_peak_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  overlap=None)
    if args.kind == 'large':
        # the same tiles, read beforehand, through the bare model
        with WholeSlide(args.slide) as slide:
            mpp0 = slide.mpp
            choice = choose_level(slide, None)
            thumb, ds = slide.thumbnail(2048, max(1, int(2.0 / mpp0)))
        tissue = detect_tissue(thumb, mpp=mpp0 * ds)
        codec = tile_model.codec
        overlap = max(args.tile // 8, 2 * (codec.min_distance + codec.exclude_border))
        tiles, _ = plan_tiles(choice, args.tile, overlap, TissueIntegral(tissue, ds), 0.0)
        data = SlideTileDataset(args.slide, choice.level, choice.scale, tiles, args.tile)
        batch = [data[i][0] for i in range(len(data))]
        batches = [torch.stack(batch[i:i + args.batch_size])
                   for i in range(0, len(batch), args.batch_size)]
        t0 = time.perf_counter()
        for b in batches:
            tile_model(b)
        bare = time.perf_counter() - t0
        result.update(bare_seconds=bare, bare_tiles=len(batch), overlap=overlap)
    print('RESULT ' + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/_base_/models/heatmap_point_r18_fpn.py')
    parser.add_argument('--checkpoint', default=None)
    parser.add_argument('--size', type=int, default=2048, help='side of the small slide (px)')
    parser.add_argument('--tile', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--kind', default='small', help=argparse.SUPPRESS)
    parser.add_argument('--slide', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    tmp = tempfile.mkdtemp(prefix='bench_slide_')
    slides = dict(small=os.path.join(tmp, 'small.tif'), large=os.path.join(tmp, 'large.tif'))
    t0 = time.perf_counter()
    build_tiff(slides['small'], args.size)
    build_tiff(slides['large'], args.size * 2)
    print(f'built {args.size}^2 and {2 * args.size}^2 pyramidal JPEG TIFFs in '
          f'{time.perf_counter() - t0:.1f} s ({os.path.getsize(slides["small"]) / 2**20:.1f} / '
          f'{os.path.getsize(slides["large"]) / 2**20:.1f} MB)')
    rows = {}
    try:
        _run_children(args, slides, rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(args, rows)


def _run_children(args, slides, rows) -> None:
    for kind in ('small', 'large'):
        cmd = [sys.executable, __file__, '--child', '--kind', kind, '--slide', slides[kind],
               '--config', args.config, '--tile', str(args.tile), '--batch-size',
               str(args.batch_size), '--workers', str(args.workers)]
        if args.checkpoint:
            cmd += ['--checkpoint', args.checkpoint]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        line = [x for x in out.splitlines() if x.startswith('RESULT ')][-1]
        rows[kind] = json.loads(line[len('RESULT '):])


def _report(args, rows) -> None:
    s, big = rows['small'], rows['large']
    print(f"{'slide':>6} {'px':>11} {'tiles':>11} {'cells':>7} {'seconds':>8} {'tiles/s':>8} "
          f"{'cells/s':>8} {'base MB':>8} {'peak MB':>8}")
    for kind, side in (('small', args.size), ('large', 2 * args.size)):
        r = rows[kind]
        px = f'{side}x{side}'
        tiles = '{}/{}'.format(r['tiles'], r['tiles_total'])
        print(f"{kind:>6} {px:>11} {tiles:>11} {r['cells']:>7} {r['seconds']:>8.1f} "
              f"{r['tiles'] / r['seconds']:>8.2f} {r['cells'] / r['seconds']:>8.0f} "
              f"{r['baseline_mb']:>8.0f} {r['peak_mb']:>8.0f}")
    overhead = (big['seconds'] - big['bare_seconds']) / big['seconds']
    print(f"large slide: bare model forward on the same {big['bare_tiles']} tiles: "
          f"{big['bare_seconds']:.1f} s; pipeline {big['seconds']:.1f} s -> overhead "
          f"{100 * overhead:.1f}% of the wall time (target <= 15%)")
    print(f"peak RSS, 4x pixels: {big['peak_mb']:.0f} / {s['peak_mb']:.0f} MB = "
          f"x{big['peak_mb'] / s['peak_mb']:.3f} (target <= x1.10); largest reader worker "
          f"{big['worker_peak_mb']:.0f} / {s['worker_peak_mb']:.0f} MB")
    from protocal.models.detectors.point_detector import tile_starts
    n = len(tile_starts(100000, args.tile, args.tile - big['overlap']))**2
    per_tile = big['seconds'] / big['tiles']
    print(f"projected 100,000 x 100,000 px slide, all tissue: {n} tiles x {per_tile:.3f} s = "
          f"{n * per_tile / 3600:.1f} h on this CPU ({args.workers} reader workers, "
          f"{os.environ.get('OMP_NUM_THREADS', '?')} threads)")
    print('RESULTS ' + json.dumps(rows))


if __name__ == '__main__':
    main()
