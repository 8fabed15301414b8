"""MIL counting benchmarks, measured side by side in one run.

1. Tile scoring of one image: batched over the whole image (``MILTileClassifier.score_tiles``:
   one gather of all tiles, forward in chunks) vs a per-tile loop with the same classifier
   (one forward per tile, as a naive implementation would do). Same numbers are checked.
2. Pseudo-mask time per image (scoring + union + colour refinement + cleanup) and the projected
   time for LYSTO's 20,000 training images on this machine.

Usage (CPU, 2 threads)::

    flock /tmp/protocal-cpu.lock env OMP_NUM_THREADS=2 \
        .venv/bin/python benchmarks/bench_mil.py [--backbone r18-half|r18|r50] [--repeats 3]
"""
import argparse
import time

import numpy as np
import torch


def build(backbone: str, tile: int, stride: int):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    import protocal  # noqa: F401
    init_default_scope('mmseg')
    if backbone == 'r50':
        bb, ch = dict(type='ResNet', depth=50, out_indices=(3, )), 2048
    elif backbone == 'r18':
        bb, ch = dict(type='ResNet', depth=18, out_indices=(3, )), 512
    else:
        bb, ch = dict(type='ResNet', depth=18, stem_channels=32, base_channels=32,
                      out_indices=(3, )), 256
    model = MODELS.build(dict(
        type='MILTileClassifier', backbone=bb, in_channels=ch, tile_size=tile,
        tile_stride=stride, tile_batch=4096,
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True)))
    return model.eval()


@torch.no_grad()
def per_tile_loop(model, inputs, tile, stride):
    from protocal.models.mil import tile_grid
    h, w = inputs.shape[-2:]
    grid = tile_grid(h, w, tile, stride)
    out = torch.empty(len(grid))
    for k, (y, x) in enumerate(grid.tolist()):
        out[k] = model.tile_logits(inputs[:, :, y:y + tile, x:x + tile]).softmax(1)[0, 1]
    return out


def timeit(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--backbone', default='r18-half', choices=['r18-half', 'r18', 'r50'])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--size', type=int, default=299, help='image side (LYSTO: 299)')
    args = p.parse_args()
    torch.manual_seed(0)
    from protocal.apis.mil import build_pseudo_mask, images_to_inputs
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    print(f'torch threads: {torch.get_num_threads()}, backbone {args.backbone}, image '
          f'{args.size}x{args.size}')

    # 1. batched vs per-tile loop (training tiles of the reference: 32 px, stride 20)
    tile, stride = 32, 20
    model = build(args.backbone, tile, stride)
    inputs = images_to_inputs(model, [img])
    t_batched, (probs, grid) = timeit(lambda: model.score_tiles(inputs), args.repeats)
    t_loop, loop_probs = timeit(lambda: per_tile_loop(model, inputs, tile, stride), args.repeats)
    diff = float((probs[0] - loop_probs).abs().max())
    print(f'tile scoring, {len(grid)} tiles of {tile} px (stride {stride}): batched '
          f'{t_batched * 1000:.1f} ms, per-tile loop {t_loop * 1000:.1f} ms, ratio '
          f'{t_loop / t_batched:.1f}x (max |diff| {diff:.2e})')

    # 2. pseudo masks: pseudo-mask tiles 32 px (= the training tiles, trap T6 fixed), stride 5
    pm_tile, pm_stride = 32, 5

    def pseudo():
        probs, grid = model.score_tiles(images_to_inputs(model, [img]), pm_tile, pm_stride)
        return build_pseudo_mask(probs[0].numpy(), grid, pm_tile, img.shape[:2], thr=0.95,
                                 count=5, rgb=img[..., ::-1], refine=dict(type='hsv_value'),
                                 min_size=400, hole_size=120)

    t_pm, _ = timeit(pseudo, args.repeats)
    from protocal.models.mil import tile_grid
    n_tiles = len(tile_grid(args.size, args.size, pm_tile, pm_stride))
    print(f'pseudo mask ({n_tiles} tiles of {pm_tile} px, stride {pm_stride}, HSV refinement, '
          f'cleanup): {t_pm:.3f} s per image -> 20,000 LYSTO images: {t_pm * 20000 / 3600:.2f} h '
          'on this machine')

    # the reference's 16-px pseudo-mask tiles
    def pseudo16():
        probs, grid = model.score_tiles(images_to_inputs(model, [img]), 16, 5)
        return build_pseudo_mask(probs[0].numpy(), grid, 16, img.shape[:2], thr=0.95, count=5,
                                 rgb=img[..., ::-1], refine=dict(type='hsv_value'))
    t16, _ = timeit(pseudo16, args.repeats)
    print(f'pseudo mask with the reference 16-px tiles (3,364 tiles): {t16:.3f} s per image -> '
          f'20,000 images: {t16 * 20000 / 3600:.2f} h')


if __name__ == '__main__':
    main()
