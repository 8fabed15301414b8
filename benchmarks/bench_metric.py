"""Cost of PointF1Metric (every mode) relative to running the baseline detector.

Synthetic set: ``--images`` images with ``--points`` GT cells each (jittered grid over an
``--extent`` x ``--extent`` square, two classes, 30 % annotated). Predictions are the GT moved by
N(0, 3 px), with 10 % of the cells missed, 10 % spurious detections and 15 % wrong labels. The
metric is timed through mmengine's ``Evaluator`` (``DetDataSample.to_dict()`` + ``process`` +
``compute_metrics``), as in a validation loop.

The detector is ``configs/_base_/models/heatmap_point_r50_fpn.py`` (ResNet-50 + FPN +
HeatmapPointHead, random weights, eval mode, batch 1) on ``--size`` x ``--size`` random images
(default 256 px to keep the run short; real patches are 1024 px, where inference costs ~16x more
while the metric costs the same, so the ratio printed here is an upper bound).

Target (issue #4): metric time < 10 % of inference time for every mode.

    python benchmarks/bench_metric.py --images 100 --points 500 --size 256
"""
import argparse
import os.path as osp
import statistics
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', '_base_', 'models', 'heatmap_point_r50_fpn.py')
MODES = ('reference', 'ocelot', 'hungarian')
CLASSES = ('tumor', 'other')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=100)
    parser.add_argument('--points', type=int, default=500, help='GT cells per image')
    parser.add_argument('--extent', type=float, default=256,
                        help='side of the square the cells are spread over, in pixels (256: '
                        '500 cells 11 px apart, denser than real tissue: a worst case)')
    parser.add_argument('--size', type=int, default=256, help='inference image size')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: all)')
    parser.add_argument('--repeats', type=int, default=3, help='metric timings (median)')
    parser.add_argument('--config', default=CONFIG)
    return parser.parse_args(argv)


def synthetic_samples(num_images, num_points, extent, seed=0):
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(num_points)))
    step = extent / side
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing='xy'), -1)
    grid = (grid.reshape(-1, 2)[:num_points] + 0.5) * step
    samples = []
    for i in range(num_images):
        gt = (grid + rng.normal(0, step * 0.15, grid.shape)).clip(0, extent - 1)
        gt_labels = rng.integers(0, len(CLASSES), num_points)
        found = rng.random(num_points) > 0.1
        pred = gt[found] + rng.normal(0, 3, (int(found.sum()), 2))
        pred_labels = gt_labels[found].copy()
        flip = rng.random(len(pred_labels)) < 0.15
        pred_labels[flip] = 1 - pred_labels[flip]
        extra = int(0.1 * num_points)
        pred = np.concatenate([pred, rng.uniform(0, extent, (extra, 2))])
        pred_labels = np.concatenate([pred_labels, rng.integers(0, len(CLASSES), extra)])
        ds = DetDataSample(metainfo=dict(img_path=f'synthetic_{i}.png', img_id=i,
                                         ori_shape=(int(extent), int(extent))))
        ds.gt_instances = InstanceData(
            points=torch.from_numpy(gt.astype(np.float32)),
            labels=torch.from_numpy(gt_labels),
            annotated=torch.from_numpy(rng.random(num_points) < 0.3))
        ds.pred_instances = InstanceData(
            points=torch.from_numpy(pred.astype(np.float32)),
            labels=torch.from_numpy(pred_labels),
            scores=torch.from_numpy(rng.random(len(pred)).astype(np.float32)))
        samples.append(ds)
    return samples


def time_metric(mode, samples, repeats):
    from mmengine.evaluator import Evaluator

    from protocal.evaluation.metrics import PointF1Metric
    times, result = [], None
    for _ in range(repeats):
        evaluator = Evaluator([PointF1Metric(mode=mode, classes=CLASSES)])
        start = time.perf_counter()
        for ds in samples:  # one image per batch, as in a test loop
            evaluator.process([ds])
        result = evaluator.evaluate(len(samples))
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def time_inference(config, num_images, size, seed=0):
    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import protocal  # noqa: F401  (registers the detector)
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    model = MODELS.build(cfg.model).eval()
    gen = torch.Generator().manual_seed(seed)

    def batch():
        meta = dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0),
                    pad_shape=(size, size), batch_input_shape=(size, size))
        image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        return dict(inputs=[image], data_samples=[DetDataSample(metainfo=meta)])

    with torch.no_grad():
        for _ in range(2):  # warm-up
            model.test_step(batch())
        batches = [batch() for _ in range(num_images)]
        start = time.perf_counter()
        for data in batches:
            model.test_step(data)
        return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.logging import MMLogger
    MMLogger.get_instance('bench_metric', log_level='WARNING')  # silence the metric's table
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'{args.images} images x {args.points} GT cells over {args.extent:g} px, '
          f'inference at {args.size} px, torch threads: {torch.get_num_threads()}')
    samples = synthetic_samples(args.images, args.points, args.extent)
    infer = time_inference(args.config, args.images, args.size)
    print(f'inference (R50-FPN heatmap detector, batch 1): {infer:.2f} s '
          f'({infer / args.images * 1000:.1f} ms / image)')
    worst = 0.0
    for mode in MODES:
        seconds, result = time_metric(mode, samples, args.repeats)
        ratio = seconds / infer
        worst = max(worst, ratio)
        print(f'metric mode={mode:9s}: {seconds:.3f} s ({seconds / args.images * 1000:.2f} '
              f'ms / image), {100 * ratio:.1f} % of inference; mF1 {result["point/mF1"]:.3f}, '
              f'det_f1 {result["point/det_f1"]:.3f}, '
              f'unannotated_recall {result["point/unannotated_recall"]:.3f}')
    print(f'worst ratio {100 * worst:.1f} % (target < 10 %): '
          f"{'PASS' if worst < 0.10 else 'FAIL'}")
    return 0 if worst < 0.10 else 1


if __name__ == '__main__':
    raise SystemExit(main())
