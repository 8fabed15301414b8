"""LPD training-step cost vs a SegFormer-B1 encoder with a plain CAM head, and pseudo-mask speed.

Part 1 (training step, same synthetic batch, each variant in its own subprocess so that its peak
memory can be measured): median step time and the peak resident memory added by training, and
their ratios to ``cam`` (MiT-B1 + 1x1-conv CAM classifier per stage, L_cls only):

* ``lpd``        -- the paper-faithful model (``lpd_mit-b1_8e_bcss-wsss-k10.py``: K = 10,
                    L_cls + L_sim + L_div after warm-up, L_sim on every selected pair, frozen
                    Swin-T at 224 px), the frozen encoder's forward/backward (w.r.t. its input)
                    included;
* ``lpd-budget`` -- the practical default (``lpd-budget_mit-b1_8e_bcss-wsss-k10.py``: the same
                    model and losses, L_sim on an unbiased per-image sample of the selected pairs
                    and a cheaper frozen encoder; see the config);
* ``lpd-cap8``   -- the paper model with L_sim on at most 8 (image, prototype) pairs per batch;
* ``lpd-warmup`` -- LPD during the loss warm-up (L_cls only): the prototype head's own cost.

Part 2 (pseudo-mask generation, ``lpd`` weights random, one image at a time, every mode warmed up
once before it is timed): images/s for single view, 6-view TTA, dense CRF, TTA + CRF.

Targets (issue 12): LPD step <= 2x time and <= 1.5x peak memory of the CAM step.

    python benchmarks/bench_lpd.py --size 224 --batch 2 --steps 3
    python benchmarks/bench_lpd.py --size 224 --images 8 --skip-train
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CONFIG = 'configs/lpd/lpd_mit-b1_8e_bcss-wsss-k10.py'
BUDGET_CONFIG = 'configs/lpd/lpd-budget_mit-b1_8e_bcss-wsss-k10.py'
VARIANTS = ('cam', 'lpd', 'lpd-budget', 'lpd-cap8', 'lpd-warmup')


def rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def batch(size: int, n: int, seed: int = 0):
    import torch
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8))
        label = (torch.rand(4, generator=gen) < 0.5).float()
        label[torch.randint(0, 4, (1, ), generator=gen)] = 1.0
        s = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size)))
        s.set_field(label, 'gt_cls_label')
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def build_model(variant: str, cfg):
    import warnings

    from mmseg.registry import MODELS
    model = cfg.model
    model.test_cfg = dict(model.test_cfg, tta=False, crf=None)
    if variant == 'cam':
        model.head = dict(type='LinearCAMHead', num_classes=4, in_channels=[64, 128, 320, 512])
        model.loss_sim = model.loss_div = model.frozen_encoder = None
    else:
        model.warmup_iters = 10**9 if variant == 'lpd-warmup' else 0
        if variant == 'lpd-cap8':
            model.max_sim_pairs = 8
            model.sim_pairs_per_image = None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return MODELS.build(model)


def run_step(args) -> dict:
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import protocal  # noqa: F401
    init_default_scope('mmseg')
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    def build(variant):
        torch.manual_seed(0)
        config = BUDGET_CONFIG if variant == 'lpd-budget' else CONFIG
        model = build_model(variant, Config.fromfile(config)).train()
        return model, build_optim_wrapper(model, dict(optimizer=dict(type='AdamW', lr=5e-5)))

    def step(model, optim):
        start = time.perf_counter()
        model.train_step(data, optim)
        return time.perf_counter() - start

    data = batch(args.size, args.batch)
    if args._worker == 'pair':
        # time only: the CAM step and the variant's step alternate, so that slow drifts of a
        # shared machine hit both; ratio = median over rounds of (variant / cam)
        cam, lpd = build('cam'), build(args.variant)
        rounds = [(step(*cam), step(*lpd)) for _ in range(args.warmup + args.steps)]
        rounds = rounds[args.warmup:]
        return dict(cam=statistics.median(r[0] for r in rounds),
                    time=statistics.median(r[1] for r in rounds),
                    ratio=statistics.median(r[1] / r[0] for r in rounds))
    model, optim = build(args.variant)
    base = rss_mb()
    times, pairs = [], []
    for _ in range(args.warmup + args.steps):
        times.append(step(model, optim))
        pairs.append(list(getattr(model, 'last_sim_pairs', (0, 0))))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(time=statistics.median(times[args.warmup:]), mem=peak - base,
                pairs=pairs[args.warmup:], times=times)


def run_pseudo(args) -> dict:
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import protocal  # noqa: F401
    from protocal.models.segmentors.wsss_postprocess import crf_available
    init_default_scope('mmseg')
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build_model('lpd', Config.fromfile(CONFIG)).eval()
    data = model.data_preprocessor(batch(args.size, args.images), False)
    out = {}
    modes = [('single', False, None), ('tta', True, None)]
    if crf_available():
        modes += [('crf', False, True), ('tta+crf', True, True)]
    with torch.no_grad():
        for name, tta, crf in modes:
            model.test_cfg.update(tta=tta, crf=crf)
            model.predict(data['inputs'][:1], data['data_samples'][:1])  # untimed warm-up
            start = time.perf_counter()
            for i in range(args.images):
                model.predict(data['inputs'][i:i + 1], data['data_samples'][i:i + 1])
            out[name] = args.images / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--images', type=int, default=4, help='images for pseudo-mask speed')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--variants', nargs='+', choices=VARIANTS,
                        default=['cam', 'lpd', 'lpd-budget', 'lpd-warmup'])
    parser.add_argument('--skip-pseudo', action='store_true')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--no-interleave', action='store_true',
                        help='time ratios from the separate per-variant runs only')
    parser.add_argument('--_worker', choices=['step', 'pair', 'pseudo'], help=argparse.SUPPRESS)
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        result = run_pseudo(args) if args._worker == 'pseudo' else run_step(args)
        print('RESULT ' + json.dumps(result))
        return

    def sub(extra):
        cmd = [sys.executable, __file__, '--size', str(args.size), '--batch', str(args.batch),
               '--steps', str(args.steps), '--warmup', str(args.warmup), '--images',
               str(args.images), '--threads', str(args.threads)] + extra
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith('RESULT ')]
        if run.returncode or not lines:
            raise SystemExit(run.stdout[-2000:] + run.stderr[-3000:])
        return json.loads(lines[-1][7:])

    results = {} if args.skip_train else {
        v: sub(['--_worker', 'step', '--variant', v]) for v in args.variants}
    ref = results.get('cam')
    paired = {}
    if ref and not args.no_interleave:
        paired = {v: sub(['--_worker', 'pair', '--variant', v]) for v in results if v != 'cam'}
    if results:
        print(f'# training step, batch {args.batch} x {args.size} px, {args.threads} threads, '
              f'median of {args.steps} steps after {args.warmup}; memory = peak RSS added by '
              f'training, one process per variant')
        print(f'{"variant":12s} {"s/step":>8s} {"+MB":>8s} {"time x":>7s} {"mem x":>7s} '
              f'{"paired":>22s}  L_sim pairs encoded/selected per step')
    for v, r in results.items():
        tx = r['time'] / ref['time'] if ref else float('nan')
        mx = r['mem'] / ref['mem'] if ref and ref['mem'] > 0 else float('nan')
        pairs = ' '.join(f'{used}/{sel}' for sel, used in r['pairs']) if v != 'cam' else '-'
        p = paired.get(v)
        pair_txt = (f'{p["time"]:6.3f}/{p["cam"]:6.3f}={p["ratio"]:5.2f}x' if p else '-')
        print(f'{v:12s} {r["time"]:8.3f} {r["mem"]:8.1f} {tx:7.2f} {mx:7.2f} {pair_txt:>22s}  '
              f'{pairs}')
    if paired:
        print('# paired: variant s/step / CAM s/step = median ratio, steps of the two models '
              'alternating in one process (robust to a drifting shared machine)')
    if not args.skip_pseudo:
        speed = sub(['--_worker', 'pseudo'])
        print(f'# pseudo-mask generation, {args.images} images of {args.size} px, images/s')
        for name, ips in speed.items():
            print(f'{name:12s} {ips:8.2f} img/s  ({ips / speed["single"]:.2f}x single view)')


if __name__ == '__main__':
    main()
