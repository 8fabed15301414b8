#!/usr/bin/env python
"""Peak memory of sliding-window inference vs image size (issue #4 performance target).

Each size runs in a fresh subprocess (``resource.getrusage`` peak RSS is per process): build the
demo-size detector (ResNet-18 + FPN, random weights, ``test_cfg.mode='slide'``, 512 px tiles,
stride 448), run ``PointDetector.predict`` on one random image, and report

* ``baseline``: peak RSS after building the model and one 512 px tile forward (no large image);
* ``peak``: peak RSS after the whole-image sliding-window prediction;
* ``input``: the bytes of the float32 input tensor itself (3 x H x W x 4), which necessarily
  scales with the image, and ``peak - baseline - input``: the working memory of the inference.

The target is that this working memory does not grow with the image (only tile-sized maps are
held); the ratio 4096^2 / 2048^2 of the working memory is printed (16x pixels; ~1x expected).

Usage: python benchmarks/bench_sliding_window.py [--sizes 2048 4096]
"""
import argparse
import json
import subprocess
import sys

CHILD = r'''
import json, resource, sys, time
import torch
import protocal  # noqa
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
torch.set_num_threads(2)
init_default_scope('mmdet')
size = int(sys.argv[1])
cfg = Config.fromfile('configs/_base_/models/heatmap_point_r18_fpn.py')
cfg.model.test_cfg = dict(mode='slide', crop_size=512, stride=448, tiles_per_batch=1)
model = MODELS.build(cfg.model).eval()
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def run(h, w):
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        out = model.predict(x, [sample])
    return len(out[0].pred_instances)
run(512, 512)
baseline = rss_mb()
torch.manual_seed(0)
t = time.perf_counter()
n = run(size, size)
print(json.dumps(dict(size=size, baseline=baseline, peak=rss_mb(), points=n,
                      input=3 * size * size * 4 / 2**20, seconds=time.perf_counter() - t)))
'''


def measure(size: int) -> dict:
    out = subprocess.run([sys.executable, '-c', CHILD, str(size)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[2048, 4096])
    args = parser.parse_args()
    rows = [measure(s) for s in args.sizes]
    print(f"{'size':>6} {'baseline MB':>12} {'peak MB':>9} {'input MB':>9} {'working MB':>11} "
          f"{'seconds':>8}")
    for r in rows:
        r['working'] = r['peak'] - r['baseline'] - r['input']
        print(f"{r['size']:>6} {r['baseline']:>12.0f} {r['peak']:>9.0f} {r['input']:>9.0f} "
              f"{r['working']:>11.0f} {r['seconds']:>8.1f}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        pixels = (b['size'] / a['size'])**2
        print(f"pixels x{pixels:.0f}: peak RSS x{b['peak'] / a['peak']:.2f}, working memory "
              f"(peak - baseline - input) x{max(b['working'], 1) / max(a['working'], 1):.2f}")


if __name__ == '__main__':
    main()
