"""ProCNS costs, side by side in one run.

(a) One ProCNS training step (stage 1: pCE + PRSA; stage 2: + soft labels + pseudo-label CE, with
    the store lookup; ``explicit``: stage 1 through the explicit reference path -- the
    (B, k2, H, W) kernel tensor with autograd through the window, and the up-sampled (B, D, H, W)
    embedding -- i.e. the implementation before the fast path, same values) versus one pCE-only
    step of the **same** segmentor (PyMIC U-Net of
    ``configs/_base_/models/procns_unet.py``, SGD step, in-model augmentation on), batch ``--batch``
    of ``--size``^2 crops. Time: median over ``--steps`` steps. Peak memory: each variant runs in
    its own subprocess and reports the growth of ``ru_maxrss`` (process peak RSS) from just
    before its first step to the end (forward + backward buffers included). Target: ratios <= 1.3.
(b) Dice + HD95 + ASD + ASSD of ``--masks`` predicted masks of 256^2 (DiceHD95Metric functional,
    scipy EDT) versus the U-Net inference time of those masks (batch 4, eval mode). Target:
    metric time below inference time.

    python benchmarks/bench_procns.py [--size 256] [--batch 4] [--steps 5] [--masks 100] [--rounds 2]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CFG = os.path.join(ROOT, 'configs', '_base_', 'models', 'procns_unet.py')


def build_model(losses):
    import protocal  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(MODEL_CFG)
    cfg.model.losses = losses
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    return model  # PyTorch default initialisation (init_weights only logs here)


def make_batch(size: int, batch: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs = torch.rand(batch, 3, size, size, generator=gen) * 255
    samples = []
    for b in range(batch):
        sparse = torch.full((1, size, size), 255, dtype=torch.long)
        idx = torch.randint(0, size * size, (size * size // 200,), generator=gen)
        sparse.view(-1)[idx] = torch.randint(0, 2, idx.shape, generator=gen)
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), sample_idx=b,
                                             crop_box=(0, size, 0, size)))
        sample.gt_sem_seg = PixelData(data=sparse)
        samples.append(sample)
    return inputs, samples


def use_explicit_reference_path() -> None:
    """Route ProCNSLoss through the explicit kernel / embedding functions (benchmark only)."""
    import torch.nn.functional as F

    import protocal.models.losses.procns as procns
    from protocal.prototypes import (local_affinity_kernel, potts_affinity_loss,
                                     prototype_class_affinity)

    def potts(probs, image, dest, radius, sigma_xy, sigma_rgb, weight, dilation, valid,
              reference_compat_kernel_sum=False):
        kernel = local_affinity_kernel(image, radius, sigma_xy, sigma_rgb, weight, dilation, valid)
        return potts_affinity_loss(probs, kernel, dest, radius, dilation,
                                   reference_compat_kernel_sum)

    def affinity(feats, prototypes, size):
        embed = torch.cat([F.interpolate(f, size=size, mode='bilinear', align_corners=False)
                           for f in feats], dim=1)
        return prototype_class_affinity(embed, prototypes)

    procns.local_potts_loss = potts
    procns.upsampled_prototype_class_affinity = affinity


def run_variant(variant: str, size: int, batch: int, steps: int) -> dict:
    """One process per variant: returns median step time and peak-memory growth."""
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
    if variant == 'pce':
        model = build_model([dict(type='PartialCELoss')])
        stage = 1
    else:
        if variant.endswith('explicit'):
            use_explicit_reference_path()
        model = build_model([dict(type='ProCNSLoss', num_classes=2)])
        stage = 2 if 'stage2' in variant else 1
    inputs, samples = make_batch(size, batch)
    if stage == 2:
        gen = torch.Generator().manual_seed(1)
        for b in range(batch):
            probs = torch.rand(2, size, size, generator=gen).softmax(0)
            model.store.ema_update(b, probs)
            noisy = torch.rand(size, size, generator=gen) < 0.1
            model.store.mask_pixels(b, noisy)
    model.set_train_progress(0, stage)
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(i):
        model.set_train_progress(i, stage)
        losses = model.loss(inputs / 255.0, samples)  # normalised as the preprocessor does
        loss = sum(losses.values())
        optim.zero_grad()
        loss.backward()
        optim.step()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step(0)  # warm-up (first-call overheads); its peak counts for the memory figure
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(i + 1)
        times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(variant=variant, time=statistics.median(times),
                peak_growth_mb=(peak_rss - base_rss) / 1024, peak_rss_mb=peak_rss / 1024)


def metric_vs_inference(num_masks: int, size: int = 256) -> dict:
    from protocal.evaluation.functional.seg_distances import binary_seg_metrics
    from scipy import ndimage as ndi
    model = build_model([dict(type='PartialCELoss')]).eval()
    gen = np.random.default_rng(0)
    images = torch.rand(num_masks, 3, size, size)
    start = time.perf_counter()
    preds = []
    with torch.no_grad():
        for i in range(0, num_masks, 4):
            _, logits = model.forward_logits(images[i:i + 4])
            preds.append(logits.argmax(1))
    infer = time.perf_counter() - start
    # realistic masks: smoothed random blobs (GT) and a perturbed copy (prediction)
    gts, prs = [], []
    for _ in range(num_masks):
        field = ndi.gaussian_filter(gen.standard_normal((size, size)), 8)
        gts.append(field > 0.02)
        prs.append(ndi.gaussian_filter(field + 0.01 * gen.standard_normal((size, size)), 2) > 0)
    start = time.perf_counter()
    for p, g in zip(prs, gts):
        binary_seg_metrics(p, g)
    metric = time.perf_counter() - start
    return dict(masks=num_masks, inference_s=infer, metric_s=metric, ratio=metric / infer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--masks', type=int, default=100)
    parser.add_argument('--rounds', type=int, default=2,
                        help='interleaved rounds; time = best round median, memory = median')
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.size, args.batch, args.steps)))
        return
    variants = ('pce', 'procns_stage1', 'procns_stage2', 'procns_stage1_explicit')
    runs = {v: [] for v in variants}
    for rnd in range(args.rounds):  # interleaved (ABCD DCBA ...): slow phases of a shared host
        for variant in (variants if rnd % 2 == 0 else variants[::-1]):  # hit every variant
            out = subprocess.run([sys.executable, __file__, '--variant', variant, '--size',
                                  str(args.size), '--batch', str(args.batch), '--steps',
                                  str(args.steps)], capture_output=True, text=True, check=True)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {v: dict(time=min(r['time'] for r in rs),
                       peak_growth_mb=statistics.median(r['peak_growth_mb'] for r in rs))
               for v, rs in runs.items()}
    base = results['pce']
    print(f'(a) training step, U-Net, batch {args.batch} x {args.size}^2, '
          f'{torch.get_num_threads()} threads, median of {args.steps} steps, best of '
          f'{args.rounds} interleaved rounds')
    print(f"{'variant':<24}{'time [s]':>10}{'x pCE':>8}{'peak +MB':>10}{'x pCE':>8}")
    for name, res in results.items():
        print(f"{name:<24}{res['time']:>10.3f}{res['time'] / base['time']:>8.2f}"
              f"{res['peak_growth_mb']:>10.1f}"
              f"{res['peak_growth_mb'] / max(base['peak_growth_mb'], 1e-9):>8.2f}")
    m = metric_vs_inference(args.masks)
    print(f"(b) {m['masks']} masks 256^2: Dice+HD95+ASD+ASSD {m['metric_s']:.2f} s vs U-Net "
          f"inference {m['inference_s']:.2f} s (ratio {m['ratio']:.2f})")


if __name__ == '__main__':
    main()
