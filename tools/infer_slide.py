#!/usr/bin/env python
"""Detect and count the cells of whole-slide images (.svs, pyramidal .tiff, .ndpi, .mrxs, ...).

For every slide ``<stem>`` it writes to ``--out-dir/<stem>/``: ``cells.geojson`` (QuPath: File >
Import objects; a point per cell with class, colour and score, level-0 coordinates),
``cells.csv``, ``counts.json`` (per-class counts, tissue area, cells/mm^2), ``tissue_mask.png``
and ``density.png`` (cell density over the thumbnail); and ``--out-dir/cohort_summary.{csv,json}``
(one row per slide, failures included). See ``docs/slides.md``.

Examples::

    python tools/infer_slide.py CONFIG CHECKPOINT data/real/slides/cmu_small_region.svs \
        --out-dir outputs/slides
    python tools/infer_slide.py CONFIG CHECKPOINT /data/cohort/ --target-mpp 0.5 --resume
    bash tools/dist_infer.sh CONFIG CHECKPOINT 4 /data/cohort/ --out-dir outputs/cohort

Exit status: 0 when every slide is done (or skipped by --resume), 1 when at least one failed
(the others are still processed and the summary lists the failures), 2 on bad arguments.
"""
import argparse
import hashlib
import os
import os.path as osp
import sys
import time

# the image tool's lazy --cfg-options parser and decoding overrides, shared with this one
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from infer import _DictAction, codec_overrides  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Whole-slide cell detection: QuPath GeoJSON, CSV, counts, density maps')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file (.pth)')
    parser.add_argument('inputs', nargs='+',
                        help='slide files, folders of slides, or .txt files listing slides')
    parser.add_argument('--out-dir', default='outputs/slides', help='output root folder')
    parser.add_argument('--mpp', type=float, default=None,
                        help='microns per pixel of level 0, overriding the slide metadata '
                        '(required for slides without it)')
    parser.add_argument('--target-mpp', type=float, default=None,
                        help='microns per pixel the model was trained at; the pyramid level is '
                        'chosen (and tiles resampled) to match. Default: the config\'s '
                        'model.test_cfg.mpp if set, else level 0 as it is')
    parser.add_argument('--tile-size', type=int, default=None,
                        help='tile size in model pixels (default: config test_cfg.crop_size '
                        'or 512)')
    parser.add_argument('--overlap', type=int, default=None,
                        help='tile overlap in pixels (default: max(tile/8, 2 * (min_distance + '
                        'exclude_border)))')
    parser.add_argument('--batch-size', type=int, default=4, help='tiles per forward pass')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader reader processes')
    parser.add_argument('--device', default=None, help="'cpu', 'cuda', 'cuda:N' (default: cuda "
                        'if available, one GPU per process under dist_infer.sh)')
    parser.add_argument('--no-amp', action='store_true', help='no float16 autocast on CUDA')
    parser.add_argument('--tissue-method', choices=['saturation', 'od'], default='saturation',
                        help='tissue mask feature (Otsu threshold)')
    parser.add_argument('--min-tissue', type=float, default=0.0,
                        help='skip tiles whose own region has a tissue fraction <= this')
    parser.add_argument('--chunk-tiles', type=int, default=64,
                        help='flush detections to disk every N tiles (resume granularity)')
    parser.add_argument('--resume', action='store_true',
                        help='skip finished slides; continue an interrupted slide from its '
                        'last flushed chunk')
    parser.add_argument('--object-type', choices=['detection', 'annotation'],
                        default='detection', help='QuPath object type of the cells')
    parser.add_argument('--score-thr', type=float, nargs='+', default=None,
                        help='override the codec thresholds (one value, or one per class)')
    parser.add_argument('--min-distance', type=int, default=None,
                        help='override the minimum distance between peaks (pixels)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help="'pytorch' under torch.distributed.run (tools/dist_infer.sh)")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    parser.add_argument('--cfg-options', nargs='+', action=_DictAction, default=None,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def _model_id(args, options) -> str:
    """Identifies config + checkpoint + overrides for --resume (cheaper than hashing weights)."""
    parts = []
    for path in (args.config, args.checkpoint):
        st = os.stat(path)
        parts.append(f'{osp.abspath(path)}:{st.st_size}:{int(st.st_mtime)}')
    parts.append(repr(sorted(options.items())))
    return hashlib.sha1('|'.join(parts).encode()).hexdigest()


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            print(f'error: {what} not found: {path}', file=sys.stderr)
            return 2
    import torch
    from protocal.apis import infer_slides, init_point_detector
    from protocal.apis.slide_inference import OutputFolderError, ensure_writable_dir

    rank, world_size, local_rank = 0, 1, 0
    if args.launcher == 'pytorch':
        import torch.distributed as dist
        rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        # only metadata is exchanged (the summary records): gloo works on CPU and GPU alike
        dist.init_process_group('gloo')
    device = args.device
    if device is None:
        device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
    try:
        ensure_writable_dir(args.out_dir)
    except OutputFolderError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    options = dict(args.cfg_options or {}, **codec_overrides(args))
    model = init_point_detector(args.config, args.checkpoint, device=device, cfg_options=options)
    test_cfg = model.test_cfg or {}
    target_mpp = args.target_mpp if args.target_mpp is not None else test_cfg.get('mpp')
    tile_size = args.tile_size
    if tile_size is None:
        crop = test_cfg.get('crop_size', 512)
        tile_size = int(crop if isinstance(crop, int) else crop[0])
    start = time.perf_counter()
    records = infer_slides(
        model, args.inputs, args.out_dir, rank=rank, world_size=world_size,
        log=(lambda msg: print(f'[rank {rank}] {msg}' if world_size > 1 else msg, flush=True)),
        mpp=args.mpp, target_mpp=target_mpp, tile_size=tile_size, overlap=args.overlap,
        batch_size=args.batch_size, num_workers=args.workers, tissue_method=args.tissue_method,
        min_tissue=args.min_tissue, chunk_tiles=args.chunk_tiles, resume=args.resume,
        amp=not args.no_amp, object_type=args.object_type, progress=not args.no_progress,
        model_id=_model_id(args, options))
    failed = [r for r in records if r.get('status') == 'failed']
    if rank == 0:
        cells = sum(int(r.get('cells') or 0) for r in records)
        print(f'{len(records)} slide(s), {cells} cells, {len(failed)} failed, '
              f'{time.perf_counter() - start:.1f} s; summary: '
              f'{osp.join(osp.abspath(args.out_dir), "cohort_summary.csv")}')
        for r in failed:
            print(f'  failed: {r["slide"]}: {r["error"]}', file=sys.stderr)
    if world_size > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
