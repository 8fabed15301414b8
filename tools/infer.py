#!/usr/bin/env python
"""Detect cells on an image or a folder of images with a trained protocal point detector.

For every image ``<stem>`` it writes to ``--out-dir``:

* ``<stem>.csv``: one row per detected cell, ``x,y,class,class_name,score`` (pixels of the input);
* ``<stem>.geojson``: the same points as QuPath annotations (File > Import objects in QuPath), so
  a pathologist can review them over the slide region;
* ``<stem>_overlay.png``: the points drawn on the image, one colour per class (``--no-overlay``
  to skip).

Large images are processed tile by tile with ``--mode slide`` (overlapping tiles; peaks found
twice near tile borders are merged), so whole regions of a slide fit in memory. Whole-slide files
(.svs, .ndpi, .mrxs, pyramidal .tiff, ...) go through ``tools/infer_slide.py`` (docs/slides.md).

Example::

    python tools/infer.py configs/pcl/pcl_r18-fpn_40e_ihc-demo-10pct.py \
        work_dirs/pcl_r18-fpn_40e_ihc-demo-10pct/epoch_40.pth data/demo/ihc_points/images/val \
        --out-dir outputs/ihc_val
"""
import argparse
import os.path as osp
import sys
import time
from pathlib import Path

import mmcv


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Point detection on images: CSV + QuPath GeoJSON + overlays')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file (.pth)')
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('--out-dir', default='outputs', help='where predictions are written')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument('--mode', choices=['whole', 'slide'], default=None,
                        help="'slide' for images larger than the training size "
                        '(default: the config\'s model.test_cfg.mode)')
    parser.add_argument('--crop-size', type=int, default=None,
                        help='tile size of --mode slide (default: config or 1024)')
    parser.add_argument('--stride', type=int, default=None,
                        help='tile stride of --mode slide (default: config or 3/4 of the tile)')
    parser.add_argument('--score-thr', type=float, nargs='+', default=None,
                        help='override the per-class probability thresholds of the codec '
                        '(one value, or one per class)')
    parser.add_argument('--min-distance', type=int, default=None,
                        help='override the minimum distance between peaks (pixels)')
    parser.add_argument('--no-overlay', action='store_true', help='do not write overlays')
    parser.add_argument('--heatmap', action='store_true',
                        help='blend the predicted foreground probability into the overlays')
    parser.add_argument('--cfg-options', nargs='+', action=_DictAction, default=None,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


class _DictAction(argparse.Action):
    """``key=value`` pairs parsed like mmengine's DictAction (imported lazily for a fast --help)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from mmengine.config import DictAction
        DictAction(self.option_strings, self.dest)(parser, namespace, values, option_string)


def codec_overrides(args) -> dict:
    """Decoding overrides from ``--score-thr`` / ``--min-distance`` (shared with infer_slide.py)."""
    options = {}
    if args.score_thr is not None:
        thr = args.score_thr[0] if len(args.score_thr) == 1 else list(args.score_thr)
        options['model.head.codec.score_thr'] = thr
    if args.min_distance is not None:
        options['model.head.codec.min_distance'] = args.min_distance
    return options


def build_overrides(args) -> dict:
    """Config overrides implied by the command-line flags."""
    options = dict(args.cfg_options or {})
    if args.mode is not None:
        options['model.test_cfg.mode'] = args.mode
    if args.crop_size is not None:
        options['model.test_cfg.crop_size'] = args.crop_size
    if args.stride is not None:
        options['model.test_cfg.stride'] = args.stride
    options.update(codec_overrides(args))
    if args.heatmap:
        options['model.head.test_cfg.return_heatmap'] = True
    return options


def main(argv=None) -> int:
    args = parse_args(argv)
    from protocal.apis import (inference_point_detector, init_point_detector, list_images,
                               write_points_csv, write_qupath_geojson)
    from protocal.visualization import draw_points_overlay

    # plain TIFFs stay images here; every other slide format goes to infer_slide.py
    from protocal.apis import SLIDE_SUFFIXES
    if Path(args.inputs).suffix.lower() in set(SLIDE_SUFFIXES) - {'.tif', '.tiff'}:
        print(f'{args.inputs} is a whole-slide file: use tools/infer_slide.py (docs/slides.md)',
              file=sys.stderr)
        return 2
    images = list_images(args.inputs)
    model = init_point_detector(args.config, args.checkpoint, device=args.device,
                                cfg_options=build_overrides(args))
    meta = model.dataset_meta
    classes = list(meta['classes'])
    palette = meta.get('palette')
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total, start = 0, time.perf_counter()
    for i in range(0, len(images), args.batch_size):
        chunk = images[i:i + args.batch_size]
        for path, sample in zip(chunk, inference_point_detector(model, [str(p) for p in chunk])):
            pred = sample.pred_instances
            points = pred.points.cpu().numpy()
            labels = pred.labels.cpu().numpy()
            scores = pred.scores.cpu().numpy()
            stem = path.stem
            write_points_csv(out_dir / f'{stem}.csv', points, labels, scores, classes)
            write_qupath_geojson(out_dir / f'{stem}.geojson', points, labels, scores, classes,
                                 palette=palette)
            if not args.no_overlay:
                image = mmcv.imread(str(path), channel_order='rgb')
                heatmap = None
                if 'pred_heatmap' in sample:
                    heatmap = sample.pred_heatmap.data.cpu().numpy()
                overlay = draw_points_overlay(
                    image, pred=dict(points=points, labels=labels, scores=scores),
                    classes=classes, palette=palette, heatmap=heatmap)
                mmcv.imwrite(overlay[..., ::-1], str(out_dir / f'{stem}_overlay.png'))
            counts = ', '.join(f'{name}: {int((labels == c).sum())}'
                               for c, name in enumerate(classes))
            print(f'{path.name}: {len(points)} cells ({counts})')
            total += len(points)
    elapsed = time.perf_counter() - start
    print(f'{len(images)} image(s), {total} cells in {elapsed:.1f} s; outputs in '
          f'{osp.abspath(out_dir)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
