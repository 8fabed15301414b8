"""Training-step cost of the calibrated losses vs the plain heatmap loss, side by side.

For each input size, the same detector (ResNet-50 + FPN + HeatmapPointHead by default) is trained
for a few steps with SoftCrossEntropyLoss, SemanticEnergyLoss and PrototypeCalibratedLoss on the same
synthetic batch (cells on a jittered grid, ``--ratio`` of them annotated). Every variant runs in its
own subprocess so that its peak memory can be measured; the script prints median step time and the
peak resident memory added by training, and their ratios to the plain loss.

Targets (issue "SEL and PCL"): time ratio <= 1.15 and memory ratio <= 1.2 at 512 and 1024 px.

    python benchmarks/bench_losses.py --sizes 512 1024 --steps 5
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

LOSSES = {
    'plain': dict(type='SoftCrossEntropyLoss'),
    'sel': dict(type='SemanticEnergyLoss'),
    'pcl': dict(type='PrototypeCalibratedLoss'),
}


def rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def synthetic_batch(size: int, cells: int, ratio: float, num_classes: int, seed: int = 0):
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    side = int(cells**0.5) + 1
    step = size / side
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing='xy'), -1)
    points = (grid.reshape(-1, 2).float() + 0.5) * step
    points = points[:cells] + torch.randn(cells, 2, generator=gen) * step * 0.15
    points = points.clamp(0, size - 1)
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         batch_input_shape=(size, size), pad_shape=(size, size),
                                         scale_factor=(1.0, 1.0)))
    gt = InstanceData()
    gt.points = points
    gt.labels = torch.randint(0, num_classes, (cells,), generator=gen)
    gt.annotated = torch.rand(cells, generator=gen) < ratio
    sample.gt_instances = gt
    image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
    return dict(inputs=[image], data_samples=[sample])


def run_variant(args) -> dict:
    """Runs in a subprocess: build, train ``steps`` iterations, report time and memory."""
    import torch
    import protocal  # noqa: F401
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    cfg.model.head.loss_heatmap = LOSSES[args.loss]
    model = MODELS.build(cfg.model).train()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='Adam', lr=1e-4)))
    data = synthetic_batch(args.size, args.cells, args.ratio, cfg.model.head.num_classes)
    base = rss_mb()
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        model.train_step(data, optim)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(time=statistics.median(times[args.warmup:]), mem=peak - base)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='configs/_base_/models/heatmap_point_r50_fpn.py')
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024])
    parser.add_argument('--cells', type=int, default=500, help='cells per image')
    parser.add_argument('--ratio', type=float, default=0.1, help='annotated fraction')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--loss', choices=sorted(LOSSES), help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loss is not None:  # child process
        print(json.dumps(run_variant(args)))
        return
    print(f'config={args.config} cells={args.cells} annotated={args.ratio:.0%} '
          f'steps={args.steps} threads={args.threads}')
    print(f"{'size':>6} {'loss':>6} {'step s':>8} {'x plain':>8} {'mem MB':>8} {'x plain':>8}")
    for size in args.sizes:
        results = {}
        for loss in LOSSES:
            cmd = [sys.executable, __file__, '--config', args.config, '--loss', loss, '--size',
                   str(size), '--cells', str(args.cells), '--ratio', str(args.ratio), '--steps',
                   str(args.steps), '--warmup', str(args.warmup), '--threads', str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[loss] = json.loads(out.strip().splitlines()[-1])
        plain = results['plain']
        for loss, res in results.items():
            print(f"{size:>6} {loss:>6} {res['time']:8.3f} {res['time'] / plain['time']:8.2f} "
                  f"{res['mem']:8.0f} {res['mem'] / max(plain['mem'], 1e-6):8.2f}")


if __name__ == '__main__':
    main()
