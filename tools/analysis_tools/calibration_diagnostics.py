#!/usr/bin/env python
"""Does the calibration see the unannotated cells? Energy / prototype maps and weight histograms.

For a trained SEL or PCL model and the training tiles with their sparse annotated subset:

* the weight the calibrated loss gives to the background target of every unlabelled node is its
  background-channel energy ``E^0 = 1 - S`` (``S``: mean affinity to the image's labelled nodes;
  SEL's energy, PCL's ``E^0``; :func:`protocal.prototypes.agnostic_energy`). The calibration
  helps when ``E^0`` is *lower* on nodes holding never-annotated cells ("unlabelled positives")
  than on nodes without any cell ("background");
* the histogram of ``E^0`` for the two groups, their means and the AUC of separating them by
  ``E^0`` (0.5 = no information; 1 = every unlabelled positive gets less background loss than
  every background node) go to ``weights_hist.png`` and ``diagnostics.json``;
* for PCL, the same for ``max_c`` prototype cosine (the global term of the class energies);
* ``maps/<tile>.png`` puts the image (annotated points green, never-annotated red), the predicted
  foreground probability, the ``E^0`` map and the prototype-similarity map side by side;
* with ``--thr`` (the run's decoding threshold, e.g. its val-chosen one), *why* never-annotated
  cells are missed: the decoder (the config's codec at ``--thr``) finds a cell when a peak of any
  class lies within the metric radius. ``misses`` in ``diagnostics.json`` gives the found share,
  the foreground probability near the cells (max over 5 x 5 px; quantiles) against the
  threshold, the pixel probability quantiles, detections per cell, the distance from a missed
  cell to the nearest detection and each group's distance to its nearest other cell. A miss with
  probability above the threshold is a cell without a peak of its own, not a weak one.

Example::

    python tools/analysis_tools/calibration_diagnostics.py configs/pcl/pcl_r18-fpn_20e_endonuke-10pct.py \\
        work_dirs/10/sweep_endonuke/pcl_r0.1_s0/epoch_20.pth --out-dir work_dirs/10/diag_pcl --max-maps 4
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', default='train')
    parser.add_argument('--sparse-ratio', type=float, default=0.1)
    parser.add_argument('--sparse-seed', type=int, default=0)
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--max-maps', type=int, default=4)
    parser.add_argument('--thr', type=float, default=None,
                        help='decoding threshold for the analysis of missed cells')
    return parser.parse_args(argv)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random ``pos`` value < a random ``neg`` value) (ties count 1/2): lower is 'cell'."""
    if len(pos) == 0 or len(neg) == 0:
        return float('nan')
    from scipy.stats import rankdata
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2  # pairs pos > neg (+ ties / 2)
    return float(1 - u / (len(pos) * len(neg)))


def miss_stats(near_prob, found, det_dist, nn_dist, pixel_prob, n_dets, thr) -> dict:
    """Summary of why never-annotated cells are missed (one entry per cell in the arrays).

    ``near_prob``: max foreground probability near the cell; ``found``: a detection within the
    radius; ``det_dist``: distance to the nearest detection; ``nn_dist``: to the nearest other
    cell; ``pixel_prob``: foreground probability of every pixel; ``n_dets``: detections in all.
    """
    near_prob, found = np.asarray(near_prob, float), np.asarray(found, bool)
    det_dist, nn_dist = np.asarray(det_dist, float), np.asarray(nn_dist, float)
    if not len(found):
        raise ValueError('no never-annotated cells to analyse (is the split fully annotated?)')
    missed = ~found

    def q(values, qs):
        return [float(v) for v in np.quantile(values, qs)] if len(values) else None

    return dict(
        thr=thr, cells=int(len(found)), found=float(found.mean()),
        detections_per_cell=float(n_dets / len(found)),
        cells_below_thr=float((near_prob < thr).mean()),
        missed_below_thr=float((near_prob[missed] < thr).mean()) if missed.any() else None,
        near_prob_q_0_10_50=q(near_prob, [0, 0.1, 0.5]),
        pixel_prob_q_1_10_50=q(pixel_prob, [0.01, 0.1, 0.5]),
        missed_det_dist_q_25_50_75=q(det_dist[missed], [0.25, 0.5, 0.75]),
        nn_dist_median_found=float(np.median(nn_dist[found])) if found.any() else None,
        nn_dist_median_missed=float(np.median(nn_dist[missed])) if missed.any() else None)


def _metric_radius(cfg) -> float:
    """The matching radius of the config's test metric (a cell is found within it)."""
    from protocal.apis import test_metric_cfg
    metric = test_metric_cfg(cfg)
    if 'radius' not in metric:
        raise KeyError('calibration_diagnostics --thr: the test_evaluator of the config has no '
                       'radius (a PointF1Metric is expected)')
    return float(metric['radius'])


class MissCollector:
    """Relates the never-annotated cells of each tile to the detections of the config's codec
    at ``thr``, tile by tile (:meth:`add`), and summarises them (:func:`miss_stats`)."""

    def __init__(self, cfg, thr: float):
        import copy

        from mmdet.registry import TASK_UTILS
        codec_cfg = copy.deepcopy(cfg.model.head.codec)
        codec_cfg.update(score_thr=thr)
        self.codec = TASK_UTILS.build(codec_cfg)
        self.thr, self.radius = thr, _metric_radius(cfg)
        self.near, self.found, self.det_dist, self.nn_dist, self.pixels = [], [], [], [], []
        self.n_dets = 0

    def add(self, probs, gt) -> None:
        """``probs``: (1 + K, h, w) softmax of one tile, cropped to the image; ``gt``: its
        ``gt_instances`` (``points``, ``annotated``)."""
        import torch
        fg = probs[1:].max(0).values
        dets = self.codec.decode(probs)['points'].float()
        self.n_dets += len(dets)
        self.pixels.append(fg.flatten().numpy())
        pts = gt.points.float()
        unl = ~gt.annotated.bool()
        if not unl.any():
            return
        d_gt = torch.cdist(pts, pts)
        d_gt.fill_diagonal_(float('inf'))
        self.nn_dist += d_gt[unl].min(1).values.tolist()
        d = torch.cdist(pts[unl], dets).min(1).values if len(dets) else \
            torch.full((int(unl.sum()),), float('inf'))
        self.det_dist += d.tolist()
        self.found += (d <= self.radius).tolist()
        for x, y in pts[unl].tolist():
            r, c = int(round(y)), int(round(x))
            self.near.append(float(fg[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].max()))

    def summary(self) -> dict:
        return miss_stats(self.near, self.found, self.det_dist, self.nn_dist,
                          np.concatenate(self.pixels), self.n_dets, self.thr)


def collect(model, cfg, dataset, out_dir, max_maps, misses: Optional[MissCollector] = None):
    import torch
    from mmengine.dataset import pseudo_collate

    from protocal.prototypes import agnostic_energy, node_masks_from_points
    from protocal.prototypes.affinity import flatten_nodes, prototype_cosine
    loss = model.head.loss_heatmap
    bank = getattr(loss, 'bank', None)
    num_classes = cfg.model.head.num_classes
    groups = {'unlabelled positive': [], 'background': [], 'labelled': []}
    proto = {'unlabelled positive': [], 'background': []}
    os.makedirs(osp.join(out_dir, 'maps'), exist_ok=True)
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            sample = batch['data_samples'][0]
            logits, embed = model.head(model.extract_feat(batch['inputs']))
            if embed is None:
                raise ValueError('needs a model with node embeddings (SEL or PCL)')
            gt = sample.gt_instances
            ann = gt.annotated.bool()
            h, w = sample.metainfo['img_shape'][:2]
            if misses is not None:
                misses.add(logits.softmax(1)[0, :, :h, :w], gt)
            grid = tuple(embed.shape[-2:])
            stride = logits.shape[-2] / grid[0]
            feats = flatten_nodes(embed).float()
            masks = node_masks_from_points([gt.points[ann].float()], [gt.labels[ann].long()],
                                           num_classes, stride, grid)
            e0 = agnostic_energy(feats, masks)[0]  # (N,)
            gh, gw = int(np.ceil(h / stride)), int(np.ceil(w / stride))
            valid = np.zeros(grid, bool)
            valid[:gh, :gw] = True
            node_of = lambda p: (np.floor(p[:, 1].numpy() / stride).astype(int) * grid[1] +  # noqa
                                 np.floor(p[:, 0].numpy() / stride).astype(int))
            lab_nodes = set(node_of(gt.points[ann]).tolist())
            unl_nodes = set(node_of(gt.points[~ann]).tolist()) - lab_nodes
            e0n = e0.numpy()
            pc = None
            if bank is not None:
                pc = prototype_cosine(feats, bank.prototypes)[0].max(0).values.numpy()
            for j in np.flatnonzero(valid.ravel()):
                if j in lab_nodes:
                    key = 'labelled'
                elif j in unl_nodes:
                    key = 'unlabelled positive'
                else:
                    key = 'background'
                groups[key].append(e0n[j])
                if pc is not None and key != 'labelled':
                    proto[key].append(pc[j])
            if i < max_maps:
                prob = logits.softmax(1)[0, 1:].max(0).values[:h, :w].numpy()
                _draw_maps(osp.join(out_dir, 'maps', f'{sample.metainfo["img_id"]}.png'),
                           sample, prob, e0n.reshape(grid)[:gh, :gw],
                           None if pc is None else pc.reshape(grid)[:gh, :gw], ann)
    return groups, proto


def _draw_maps(path, sample, prob, e0, pc, ann):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from PIL import Image
    h, w = sample.metainfo['img_shape'][:2]
    img = np.asarray(Image.open(sample.metainfo['img_path']).convert('RGB'))[:h, :w]
    pts = sample.gt_instances.points.numpy()
    panels = [('image: annotated (green), never annotated (red)', img),
              ('predicted max foreground probability', prob),
              ('background weight E0 = 1 - affinity (low = spared)', e0)]
    if pc is not None:
        panels.append(('max prototype cosine', pc))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.5))
    for ax, (title, data) in zip(axes, panels):
        if data.ndim == 3:
            ax.imshow(data)
            a = ann.numpy()
            ax.scatter(pts[a, 0], pts[a, 1], s=8, c='lime')
            ax.scatter(pts[~a, 0], pts[~a, 1], s=4, c='red')
        else:
            im = ax.imshow(data, cmap='viridis', extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                           interpolation='nearest')
            ax.scatter(pts[:, 0], pts[:, 1], s=2, c='white', alpha=0.6)
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=7)
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.thr is not None and not 0 < args.thr < 1:
        raise ValueError(f'--thr must be in (0, 1), got {args.thr:g}')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from protocal.apis import build_test_split_dataset, init_point_detector
    model = init_point_detector(args.config, args.checkpoint, device='cpu')
    cfg = model.cfg
    dataset = build_test_split_dataset(cfg, args.split, sparse_ratio=args.sparse_ratio,
                                       sparse_seed=args.sparse_seed)
    misses = None if args.thr is None else MissCollector(cfg, args.thr)
    groups, proto = collect(model, cfg, dataset, args.out_dir, args.max_maps, misses)
    stats = {k: dict(n=len(v), mean=float(np.mean(v)) if v else None) for k, v in groups.items()}
    stats['auc_E0_unlabelled_positive_below_background'] = auc(
        np.asarray(groups['unlabelled positive']), np.asarray(groups['background']))
    if proto['background']:
        stats['auc_proto_cos_unlabelled_positive_above_background'] = 1 - auc(
            np.asarray(proto['unlabelled positive']), np.asarray(proto['background']))
        stats['proto_cos_mean'] = {k: float(np.mean(v)) for k, v in proto.items()}
    fig, axes = plt.subplots(1, 2 if proto['background'] else 1, figsize=(9, 3.2), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for k in ('background', 'unlabelled positive', 'labelled'):
        if groups[k]:
            axes[0, 0].hist(groups[k], bins=bins, alpha=0.5, density=True,
                            label=f'{k} (n={len(groups[k])})')
    axes[0, 0].set_xlabel('background-channel weight E0 of the node')
    axes[0, 0].legend(fontsize=7)
    if proto['background']:
        pb = np.linspace(-1, 1, 41)
        for k in ('background', 'unlabelled positive'):
            axes[0, 1].hist(proto[k], bins=pb, alpha=0.5, density=True, label=k)
        axes[0, 1].set_xlabel('max prototype cosine of the node')
        axes[0, 1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(osp.join(args.out_dir, 'weights_hist.png'), dpi=100)
    plt.close(fig)
    if misses is not None:
        stats['misses'] = misses.summary()
    with open(osp.join(args.out_dir, 'diagnostics.json'), 'w') as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
