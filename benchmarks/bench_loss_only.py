"""Cost of the heatmap point losses alone: forward + backward on the same tensors, side by side.

Every registered point loss (``SoftCrossEntropyLoss``, ``SemanticEnergyLoss``,
``PrototypeCalibratedLoss`` and any other ``mmdet`` MODELS loss from ``protocal.models.losses`` with
the heatmap-loss signature ``(logits, target, embed, node_masks, valid_mask)``) runs on the same
logits (B, K+1, S, S), soft target rendered from ``--points`` annotated points per image (radius 15),
node embeddings (B, D, S/32, S/32) and node masks. Each calibrated loss runs twice: the default
fused path and the composed reference path (``fused=False``, the implementation before issue 15),
so one run gives the before/after figures under the same machine load.

* time: median over ``--repeats`` rounds; in each round every variant runs once (interleaved, the
  order rotating between rounds);
* peak memory: added by one forward + backward over the inputs (which already exist), including
  the logits' gradient. CPU: measured in one child process with glibc forced to return freed
  memory (``mallopt``) and the peak-RSS counter reset before each variant
  (``/proc/self/clear_refs``);
  CUDA: ``torch.cuda.max_memory_allocated``;
* ratios against the plain soft cross-entropy (fused, the default) and against the composed plain
  loss (``x plain0``);
* the split by term of SEL/PCL (energy, weighted CE, SFL, EL, prototype update), each term
  timed alone (forward + backward), composed and fused.

    python benchmarks/bench_loss_only.py --quick          # 512/1024/2048 px at B=2, 1024 at B=8
    python benchmarks/bench_loss_only.py                  # 512/1024/2048 px x B=2,8, CPU (+CUDA)

Run under the CPU lock on a shared machine:
``flock /tmp/protocal-cpu.lock env OMP_NUM_THREADS=2 python benchmarks/bench_loss_only.py --quick``.
ProCNS / LPD losses live in the segmentation scope with other inputs (image-level labels, scribble
masks); add an adapter to ``EXTRA_VARIANTS`` to compare them here.
"""
import argparse
import ctypes
import gc
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import time

#: name -> (registered type, extra kwargs); ``*0`` = the composed (pre-issue-15) reference path
VARIANTS = {
    'plain0': ('SoftCrossEntropyLoss', dict(fused=False)),
    'plain': ('SoftCrossEntropyLoss', {}),
    'sel0': ('SemanticEnergyLoss', dict(fused=False)),
    'sel': ('SemanticEnergyLoss', {}),
    'pcl0': ('PrototypeCalibratedLoss', dict(fused=False)),
    'pcl': ('PrototypeCalibratedLoss', {}),
}
#: hook: name -> (type, kwargs) of further point losses (filled by discovery, or by hand)
EXTRA_VARIANTS = {}
KNOWN_COMPONENTS = {'StretchedFeatureLoss', 'ExclusiveLoss'}


def discover_point_losses():
    """Other protocal losses in mmdet's MODELS with the heatmap-loss signature."""
    import protocal  # noqa: F401
    from mmdet.registry import MODELS
    known = {t for t, _ in VARIANTS.values()} | KNOWN_COMPONENTS
    found, other = {}, []
    for name, cls in sorted(MODELS.module_dict.items()):
        if not getattr(cls, '__module__', '').startswith('protocal.models.losses') or name in known:
            continue
        params = list(inspect.signature(cls.forward).parameters)[1:]
        if params[:4] == ['logits', 'target', 'embed', 'node_masks']:
            found[name.lower()] = (name, {})
    try:
        from mmseg.registry import MODELS as SEG_MODELS
        other = sorted(n for n, c in SEG_MODELS.module_dict.items()
                       if getattr(c, '__module__', '').startswith('protocal.models.losses'))
    except ImportError:
        pass
    return found, other


def build_loss(kind, kwargs, num_classes, embed_dims):
    from mmdet.registry import MODELS
    cfg = dict(type=kind, **kwargs)
    params = inspect.signature(MODELS.get(kind).__init__).parameters
    if 'num_classes' in params:
        cfg.setdefault('num_classes', num_classes)
    if 'embed_dims' in params:
        cfg.setdefault('embed_dims', embed_dims)
    return MODELS.build(cfg).train()


def make_inputs(size, batch, args, device):
    import torch
    from protocal.codecs import PointHeatmapCodec
    from protocal.prototypes import node_masks_from_points
    gen = torch.Generator().manual_seed(size * 100 + batch)
    k = args.num_classes
    points = [torch.rand(args.points, 2, generator=gen) * (size - 1) for _ in range(batch)]
    labels = [torch.randint(0, k, (args.points,), generator=gen) for _ in range(batch)]
    target = PointHeatmapCodec(num_classes=k, radius=15).encode_batch(points, labels,
                                                                      (size, size))
    grid = (size // args.stride, size // args.stride)
    masks = node_masks_from_points(points, labels, k, args.stride, grid)
    logits = torch.randn(batch, k + 1, size, size, generator=gen) * 2
    embed = torch.randn(batch, args.embed_dims, *grid, generator=gen)
    return dict(logits=logits.to(device).requires_grad_(True), target=target.to(device),
                embed=embed.to(device).requires_grad_(True), node_masks=masks.to(device))


def step(loss, inputs):
    """One forward + backward; returns nothing (gradients are dropped)."""
    out = loss(inputs['logits'], inputs['target'], embed=inputs['embed'],
               node_masks=inputs['node_masks'])
    sum(out.values()).backward()
    inputs['logits'].grad = None
    inputs['embed'].grad = None


def term_functions(kind, fused, loss, inputs):
    """name -> callable running one term of SEL/PCL alone (forward + backward)."""
    import torch
    from protocal.models.losses import ExclusiveLoss
    from protocal.models.losses.sel import energy_weighted_ce
    from protocal.prototypes import agnostic_energy, class_energies, flatten_nodes
    logits, target, embed, masks = (inputs[k] for k in ('logits', 'target', 'embed',
                                                         'node_masks'))
    grid = embed.shape[-2:]

    def energy_fn():
        feats = flatten_nodes(embed).float()
        if kind == 'sel':
            return agnostic_energy(feats, masks)
        return class_energies(feats, masks, loss.bank.prototypes.clone(), loss.alpha)

    node_energy = energy_fn().detach().requires_grad_(True)

    def run(fn):
        def wrapped():
            fn().backward()
            for t in (logits, embed, node_energy):
                t.grad = None
        return wrapped

    terms = {
        'energy': run(lambda: energy_fn().sum()),
        'weighted CE': run(lambda: energy_weighted_ce(logits, target, node_energy, grid, None,
                                                      'bilinear', False, fused=fused)),
        'SFL': run(lambda: loss.sfl(embed, masks)),
    }
    if kind == 'pcl':
        el = ExclusiveLoss(fused=fused)
        terms['EL'] = run(lambda: el(logits, target))
        feats = flatten_nodes(embed).detach().float()
        terms['prototype update'] = lambda: loss.bank.update(feats, masks)
    return terms


def sync(device):
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_variants(fns, repeats, warmup, device):
    """Interleaved rounds; the order rotates every round. Returns name -> median seconds."""
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {n: statistics.median(v) for n, v in times.items()}


# ----------------------------------------------------------------------------- memory
def _status_kb(key):
    with open('/proc/self/status') as f:
        return int(re.search(key + r':\s+(\d+)', f.read()).group(1))


def cpu_peak_mb(fn):
    """Peak resident memory added by ``fn`` (MB); needs the mallopt setup of ``memory_child``."""
    gc.collect()
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc_trim(0)
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak-RSS counter (VmHWM) to the current RSS
    base = _status_kb('VmRSS')
    fn()
    return (_status_kb('VmHWM') - base) / 1024


def memory_child(args):
    """Child process: allocations >= 64 KiB go straight to mmap and return to the OS when freed."""
    libc = ctypes.CDLL('libc.so.6')
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD
    import torch
    torch.set_num_threads(args.threads)
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    variants = dict(VARIANTS, **EXTRA_VARIANTS, **discover_point_losses()[0])
    inputs = make_inputs(args.size, args.batch, args, 'cpu')
    out = {}
    for name, (kind, kwargs) in variants.items():
        if args.variants and name not in args.variants and name != 'plain':
            continue
        loss = build_loss(kind, kwargs, args.num_classes, args.embed_dims)
        step(loss, inputs)  # warm-up (caches, lazily built tables)
        out[name] = cpu_peak_mb(lambda: step(loss, inputs))
    print(json.dumps(out))


def memory_cpu(size, batch, args):
    cmd = [sys.executable, os.path.abspath(__file__), '--memory-child', '--size', str(size),
           '--batch', str(batch), '--threads', str(args.threads), '--points', str(args.points),
           '--num-classes', str(args.num_classes), '--embed-dims', str(args.embed_dims),
           '--stride', str(args.stride)]
    if args.variants:
        cmd += ['--variants', *args.variants]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_cuda(variants, inputs):
    import torch
    out = {}
    for name, loss in variants.items():
        step(loss, inputs)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(loss, inputs)
        torch.cuda.synchronize()
        out[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


# ----------------------------------------------------------------------------- main
def bench_config(device, size, batch, args, extra):
    import torch
    variants = dict(VARIANTS, **EXTRA_VARIANTS, **extra)
    if args.variants:
        variants = {n: v for n, v in variants.items() if n in args.variants or n == 'plain'}
    inputs = make_inputs(size, batch, args, device)
    losses = {n: build_loss(k, kw, args.num_classes, args.embed_dims).to(device)
              for n, (k, kw) in variants.items()}
    fns = {n: (lambda loss=loss: step(loss, inputs)) for n, loss in losses.items()}
    if not args.no_split:
        for name in ('sel0', 'sel', 'pcl0', 'pcl'):
            if name in losses:
                for term, fn in term_functions(name[:3], not name.endswith('0'), losses[name],
                                               inputs).items():
                    fns[f'{name}:{term}'] = fn
    times = time_variants(fns, args.repeats, args.warmup, device)
    if args.no_memory:
        mem = {}
    elif device == 'cpu':
        mem = memory_cpu(size, batch, args)
    else:
        mem = memory_cuda(losses, inputs)
    del inputs, losses
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
    return times, mem


def print_tables(device, size, batch, times, mem):
    base, base0 = times.get('plain'), times.get('plain0')
    mbase, mbase0 = mem.get('plain'), mem.get('plain0')

    def ratio(a, b):
        return f'{a / b:7.2f}' if a is not None and b else '      -'

    print(f'\n[{device}] {size}x{size} px, B={batch}')
    print(f"{'loss':<8} {'ms':>8} {'x plain':>7} {'x plain0':>8} {'peak MB':>8} {'x plain':>7} "
          f"{'x plain0':>8}")
    for name in [n for n in times if ':' not in n]:
        t, m = times[name], mem.get(name)
        mstr = f'{m:8.0f}' if m is not None else '       -'
        print(f'{name:<8} {t * 1e3:8.1f} {ratio(t, base)} {ratio(t, base0):>8} {mstr} '
              f'{ratio(m, mbase)} {ratio(m, mbase0):>8}')
    split = [n for n in times if ':' in n]
    if split:
        print(f"{'term (alone, fwd+bwd)':<30} {'ms':>8} {'x plain':>7}")
        for name in split:
            print(f'{name:<30} {times[name] * 1e3:8.1f} {ratio(times[name], base)}')
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024, 2048])
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[2, 8])
    parser.add_argument('--configs', nargs='+', metavar='SxB',
                        help='explicit size x batch pairs, e.g. 1024x2 2048x2 (overrides --sizes)')
    parser.add_argument('--devices', nargs='+', default=None,
                        help='default: cpu, plus cuda when available')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--points', type=int, default=20, help='annotated points per image')
    parser.add_argument('--num-classes', type=int, default=2, help='foreground classes K')
    parser.add_argument('--embed-dims', type=int, default=70)
    parser.add_argument('--stride', type=int, default=32, help='pixels per node')
    parser.add_argument('--variants', nargs='+', help='subset of variants (plain always runs)')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--no-split', action='store_true', help='skip the split by term')
    parser.add_argument('--quick', action='store_true',
                        help='512/1024/2048 px at B=2 and 1024 px at B=8, 3 repeats')
    parser.add_argument('--memory-child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--batch', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    import torch
    torch.set_num_threads(args.threads)
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    extra, other = discover_point_losses()
    devices = args.devices or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    configs = [(s, b) for b in args.batch_sizes for s in args.sizes]
    if args.configs:
        configs = [tuple(int(v) for v in c.lower().split('x')) for c in args.configs]
    if args.quick:
        args.repeats = min(args.repeats, 3)
        configs = args.configs and configs or [(512, 2), (1024, 2), (2048, 2), (1024, 8)]
    print(f'loss-only forward+backward; K={args.num_classes} foreground classes, '
          f'{args.points} annotated points/image, embeddings {args.embed_dims}-d at stride '
          f'{args.stride}; {args.threads} threads; median of {args.repeats} interleaved rounds')
    print('variants: plain/sel/pcl = fused (default), plain0/sel0/pcl0 = composed reference '
          '(fused=False, the code before issue 15)' +
          (f'; discovered: {", ".join(extra)}' if extra else ''))
    if other:
        print('not compared (segmentation-scope losses with other inputs; add an adapter to '
              'EXTRA_VARIANTS): ' + ', '.join(other))
    for device in devices:
        for size, batch in configs:
            times, mem = bench_config(device, size, batch, args, extra)
            print_tables(device, size, batch, times, mem)


if __name__ == '__main__':
    main()
