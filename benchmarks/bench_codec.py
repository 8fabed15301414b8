"""Cost of the heatmap codec, side by side with what it is compared to.

(a) ``PointHeatmapCodec.encode`` of ``--cells`` points of 2 classes on a ``--size``^2 image versus
    one training step (forward + backward + Adam step, batch 1) of the baseline detector built from
    ``configs/_base_/models/heatmap_point_r50_fpn.py``. Target: encode < 5 % of a step. If the
    detector cannot be built, a plain ResNet-50 (``mmdet.models.backbones.ResNet``) with a 1x1 conv
    head and a soft cross-entropy on the upsampled logits stands in, and the output says so.
(b) ``PointHeatmapCodec.decode`` versus the reference post-processing (zero below the threshold,
    then ``skimage.feature.peak_local_max`` per foreground channel) on the same 2-class
    probability maps, with the SEL (thr 0.7, m 6) and PCL (thr 0.1, m 12) settings. The peaks must
    be identical (asserted). Target: decode >= 5x faster.

    python benchmarks/bench_codec.py [--size 1024] [--cells 500] [--steps 2] [--threads 2]
"""
import argparse
import statistics
import time

import numpy as np
import torch


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_cells(size: int, cells: int, num_classes: int, seed: int = 0):
    """Cell centres on a jittered grid (as in a dense tissue patch) with random labels."""
    gen = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(cells)))
    step = size / side
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:cells]
    points = (grid + 0.5) * step + gen.normal(0, 0.15 * step, (cells, 2))
    points = np.clip(np.round(points), 0, size - 1).astype(np.float32)
    return points, gen.integers(0, num_classes, cells)


def synthetic_probs(codec, points, labels, size: int, seed: int = 0) -> torch.Tensor:
    """Probability maps that look like a detector's: the target heatmap as logits plus smooth
    noise, through a softmax."""
    from scipy import ndimage as ndi
    gen = np.random.default_rng(seed)
    heat = codec.encode(points, labels, (size, size))
    noise = ndi.gaussian_filter(gen.standard_normal(heat.shape), (0, 2, 2))
    noise = torch.from_numpy(noise / noise.std()).float()
    return torch.softmax(6 * heat + 1.5 * noise, 0)


def build_train_step(config: str, size: int, points, labels, num_classes: int):
    """Returns (description, callable running one training step)."""
    from mmdet.structures import DetDataSample
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         batch_input_shape=(size, size), pad_shape=(size, size),
                                         scale_factor=(1.0, 1.0)))
    gt = InstanceData()
    gt.points = torch.from_numpy(points)
    gt.labels = torch.from_numpy(labels).long()
    gt.annotated = torch.ones(len(points), dtype=torch.bool)
    sample.gt_instances = gt
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    data = dict(inputs=[image], data_samples=[sample])
    try:
        import protocal  # noqa: F401
        from mmdet.registry import MODELS
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        init_default_scope('mmdet')
        cfg = Config.fromfile(config)
        model = MODELS.build(cfg.model).train()
        optim = build_optim_wrapper(model, dict(optimizer=dict(type='Adam', lr=1e-4)))
        model.train_step(data, optim)  # fails here rather than in the timed loop
        return f'detector from {config}', lambda: model.train_step(data, optim)
    except Exception as exc:  # noqa: BLE001  (other parts of protocal may not be ready)
        reason = f'{type(exc).__name__}: {exc}'.splitlines()[0][:200]
    return _fallback_step(size, data, num_classes, points, labels, reason)


def _fallback_step(size, data, num_classes, points, labels, reason):
    import torch.nn.functional as F
    from mmdet.models.backbones import ResNet
    from protocal.codecs import PointHeatmapCodec
    backbone = ResNet(depth=50, out_indices=(0, )).train()
    head = torch.nn.Conv2d(256, num_classes + 1, 1)
    params = list(backbone.parameters()) + list(head.parameters())
    optim = torch.optim.Adam(params, lr=1e-4)
    codec = PointHeatmapCodec(num_classes)
    image = data['inputs'][0].float().unsqueeze(0) / 255

    def step():
        target = codec.encode(points, labels, (size, size)).unsqueeze(0)
        logits = F.interpolate(head(backbone(image)[0]), size=(size, size), mode='bilinear')
        loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()

    return f'FALLBACK ResNet-50 + 1x1 conv (detector build failed: {reason})', step


def reference_decode(probs: np.ndarray, thr: float, m: int):
    from skimage.feature import peak_local_max
    return [
        peak_local_max(np.where(p < thr, 0, p), min_distance=m, exclude_border=m // 2)
        for p in probs[1:]
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='configs/_base_/models/heatmap_point_r50_fpn.py')
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--cells', type=int, default=500)
    parser.add_argument('--steps', type=int, default=2, help='timed training steps')
    parser.add_argument('--repeats', type=int, default=20, help='timed codec calls')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    from protocal.codecs import PointHeatmapCodec

    num_classes = 2
    size = args.size
    points, labels = synthetic_cells(size, args.cells, num_classes)
    codec = PointHeatmapCodec(num_classes)
    print(f'size={size} cells={args.cells} classes={num_classes} torch threads={args.threads}')

    # (a) encode vs a training step
    t_encode = median_time(lambda: codec.encode(points, labels, (size, size)), args.repeats)
    what, step = build_train_step(args.config, size, points, labels, num_classes)
    t_step = median_time(step, args.steps, warmup=0)
    print(f'\n(a) train step: {what}')
    print(f"{'encode ms':>10} {'step s':>8} {'encode/step':>12}  target < 5%")
    ratio = t_encode / t_step
    print(f'{t_encode * 1e3:10.2f} {t_step:8.2f} {ratio:12.2%}  '
          f"{'OK' if ratio < 0.05 else 'MISSED'}")

    # (b) decode vs peak_local_max
    print('\n(b) decode vs reference peak_local_max (identical peaks asserted; both '
          'single-threaded NumPy, timed alternately)')
    print(f"{'setting':>14} {'peaks':>6} {'skimage ms':>11} {'decode ms':>10} {'speed-up':>9}  "
          'target >= 5x')
    probs = synthetic_probs(codec, points, labels, size)
    probs_np = probs.numpy()
    for name, thr, m in (('SEL thr.7 m6', 0.7, 6), ('PCL thr.1 m12', 0.1, 12)):
        dec = PointHeatmapCodec(num_classes, score_thr=thr, min_distance=m)
        ref = reference_decode(probs_np, thr, m)
        out = dec.decode(probs)
        for c, peaks in enumerate(ref):
            want = sorted(map(tuple, peaks[:, ::-1].tolist()))
            got = sorted(map(tuple, out['points'][out['labels'] == c].long().tolist()))
            assert got == want, f'{name}: class {c} peaks differ from peak_local_max'
        t_ref, t_dec = [], []
        for _ in range(args.repeats):
            t_ref.append(median_time(lambda: reference_decode(probs_np, thr, m), 1, warmup=0))
            t_dec.append(median_time(lambda: dec.decode(probs), 1, warmup=0))
        t_ref, t_dec = statistics.median(t_ref), statistics.median(t_dec)
        speed_up = t_ref / t_dec
        print(f'{name:>14} {len(out["points"]):6d} {t_ref * 1e3:11.2f} {t_dec * 1e3:10.2f} '
              f"{speed_up:8.1f}x  {'OK' if speed_up >= 5 else 'MISSED'}")

if __name__ == '__main__':
    main()
