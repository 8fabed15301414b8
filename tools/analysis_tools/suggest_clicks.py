#!/usr/bin/env python
"""Where to click next: rank unannotated cells by the calibration signal and export suggestions.

For every tile of a split (the training tiles, with their sparse annotated subset) a trained
SEL / PCL model gives

* candidate cells: peaks of its heatmap at a low threshold (``--cand-thr``, default 0.02) that are
  farther than ``--radius`` from every annotated point;
* the calibration signal at each candidate's node: ``M^c = 1 - E^c``, the similarity the loss
  uses to spare unlabelled look-alikes of class ``c`` (PCL: prototype + local affinity,
  :func:`protocal.prototypes.class_energies`; SEL: the class-agnostic affinity);
* the decoder's probability ``p^c`` at the candidate.

A candidate is worth a click when the calibration says "looks like the annotated cells" while the
decoder is unsure: ``score = max_c M^c * 4 p (1 - p)`` with ``p = max_c p^c`` (``4 p (1 - p)`` is 1
at p = 0.5 and 0 for confident answers). Candidates of different classes within ``min_distance``
are merged (cross-class suppression). At most ``--per-tile`` suggestions per tile (default 5)
spread the clicks over the tiles. Class disagreement (``argmax_c M^c != argmax_c p^c``) is
reported per suggestion (``disagree``); as an extra score term it made the ranking worse (on the
bundled training tiles with the PCL 10% model: 46 of 100 top suggestions on a real cell, against
61 without it, with the per-tile cap). The top ``--top-n`` candidates over
the split are written as QuPath GeoJSON "suggested points" (``<tile>_suggested.geojson``, class
``Suggested: <predicted class>``, measurements ``score``, ``calibration``, ``probability``) and as
``suggestions.csv``.

``--simulate`` (bundled data with expert labels): each suggestion takes the nearest unannotated
expert point within ``--radius`` (a click on a real cell; suggestions that hit no cell are wasted
clicks), giving ``extra_suggested.json``; ``extra_random.json`` holds as many *random* unannotated
expert points (seeded) as the suggestions added (``--random-count hits``, the default: both arms
add the same number of annotated points, so the comparison isolates *which* cells get annotated)
or as there were clicks (``--random-count clicks``: the same annotator effort when a wasted click
costs as much as a useful one; every random point is a real cell, so this favours the random
arm). Train with either (``ratio_sweep.py --extra-annotated FILE --tag NAME``, which sets the
dataset's ``extra_annotated``) and compare on test with ``--compare``.

Measured on EndoNuke (PCL 10%, seeds 0-2, two machines, ``configs/pcl/README.md``): the
suggestions land on real unannotated nuclei (41-70 of 100) but do not raise test F1 more than as
many random expert points: the candidates are peaks the model already detects at its val-chosen
threshold, while a random never-annotated nucleus is more often a miss than not.

Example::

    python tools/analysis_tools/suggest_clicks.py configs/pcl/pcl_r18-fpn_20e_endonuke-10pct.py \\
        work_dirs/demo/pcl/epoch_20.pth --top-n 100 --out-dir work_dirs/suggest --simulate
"""
import argparse
import copy
import csv
import json
import os
import os.path as osp
import sys
from typing import Dict, Tuple

import numpy as np

# the runs compared are ratio_sweep's: their result files are read with its threshold-key lookup
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from ratio_sweep import _tk  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--split', default='train')
    parser.add_argument('--sparse-ratio', type=float, default=0.1)
    parser.add_argument('--sparse-seed', type=int, default=0)
    parser.add_argument('--top-n', type=int, default=100)
    parser.add_argument('--per-tile', type=int, default=5,
                        help='at most this many suggestions per tile (0: no cap)')
    parser.add_argument('--cand-thr', type=float, default=0.02)
    parser.add_argument('--radius', type=float, default=6.0)
    parser.add_argument('--out-dir', default='work_dirs/suggest')
    parser.add_argument('--simulate', action='store_true')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random clicks')
    parser.add_argument('--random-count', choices=['hits', 'clicks'], default='hits',
                        help='random arm size: as many points as the suggestions hit (default) '
                        'or as many as there were clicks')
    parser.add_argument('--compare', nargs='+', metavar='RUN_DIR',
                        help='print test F1 of finished ratio_sweep runs side by side')
    return parser.parse_args(argv)


def candidate_row(calib, probs) -> dict:
    """Score of one candidate from its calibration similarities ``M^c`` and decoder
    probabilities ``p^c`` (one value per foreground class): ``max_c M^c * 4 p (1 - p)`` with
    ``p = max_c p^c``; the suggested class is the decoder's."""
    m, p = np.asarray(calib, float), np.asarray(probs, float)
    pm, mm = float(p.max()), float(m.max())
    return dict(score=mm * 4 * pm * (1 - pm), calibration=mm, probability=pm,
                suggested_class=int(p.argmax()), calib_class=int(m.argmax()),
                disagree=bool(len(m) > 1 and int(m.argmax()) != int(p.argmax())))


def rank_candidates(model, cfg, dataset, cand_thr: float, radius: float):
    """All candidates of all tiles with their score, sorted by decreasing score
    (:func:`candidate_row`)."""
    import torch
    from mmdet.registry import TASK_UTILS
    from mmengine.dataset import pseudo_collate

    from protocal.prototypes import agnostic_energy, class_energies, node_masks_from_points
    from protocal.prototypes.affinity import flatten_nodes

    loss = model.head.loss_heatmap
    bank = getattr(loss, 'bank', None)
    num_classes = cfg.model.head.num_classes
    codec_cfg = copy.deepcopy(cfg.model.head.codec)
    codec_cfg.update(score_thr=cand_thr, num_classes=num_classes, cross_class_nms=True)
    codec = TASK_UTILS.build(codec_cfg)
    rows = []
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            sample = batch['data_samples'][0]
            logits, embed = model.head(model.extract_feat(batch['inputs']))
            if embed is None:
                raise ValueError('suggest_clicks needs a model with node embeddings (SEL or '
                                 'PCL); the plain soft-CE model has no calibration signal')
            h, w = sample.metainfo['img_shape'][:2]
            probs = logits.softmax(1)[0]
            det = codec.decode(probs[:, :h, :w])
            gt = sample.gt_instances
            ann = gt.annotated.bool()
            ann_pts, ann_lab = gt.points[ann].float(), gt.labels[ann].long()
            grid = tuple(embed.shape[-2:])
            stride = logits.shape[-2] / grid[0]
            masks = node_masks_from_points([ann_pts], [ann_lab], num_classes, stride, grid)
            feats = flatten_nodes(embed).float()
            if bank is not None:
                energy = class_energies(feats, masks, bank.prototypes, loss.alpha,
                                        loss.prototype_similarity)[0, 1:]  # (K, N)
            else:
                energy = agnostic_energy(feats, masks)[0][None].expand(num_classes, -1)
            calib = (1 - energy).clamp(min=0)  # (K, N): similarity to class c
            pts = det['points'].float()
            if len(pts) and len(ann_pts):
                d = torch.cdist(pts, ann_pts)
                pts = pts[(d > radius).all(1)]
            for x, y in pts.tolist():
                col, row = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                node = int(row // stride) * grid[1] + int(col // stride)
                rows.append(dict(tile=str(sample.metainfo['img_id']), x=x, y=y,
                                 **candidate_row(calib[:, node].tolist(),
                                                 probs[1:, row, col].tolist())))
    rows.sort(key=lambda r: -r['score'])
    for rank, r in enumerate(rows):
        r['rank'] = rank
    return rows


def top_suggestions(rows, top_n: int, per_tile: int = 0):
    """The ``top_n`` best-ranked candidates, at most ``per_tile`` per tile (0: no cap)."""
    out, count = [], {}
    for r in rows:
        if per_tile and count.get(r['tile'], 0) >= per_tile:
            continue
        count[r['tile']] = count.get(r['tile'], 0) + 1
        out.append(r)
        if len(out) == top_n:
            break
    return out


def write_suggestions(rows, classes, out_dir: str) -> None:
    from protocal.apis.export import write_qupath_geojson
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'suggestions.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ['tile'],
                                lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
    names = [f'Suggested: {c}' for c in classes]
    for tile in sorted({r['tile'] for r in rows}):
        sel = [r for r in rows if r['tile'] == tile]
        write_qupath_geojson(osp.join(out_dir, f'{tile}_suggested.geojson'),
                             np.array([[r['x'], r['y']] for r in sel], np.float32),
                             np.array([r['suggested_class'] for r in sel]),
                             np.array([r['score'] for r in sel], np.float32), names)


def simulate(rows, dataset, radius: float, seed: int, random_count: str = 'hits'):
    """Expert points hit by the suggestions, and random unannotated expert points.

    The random arm has as many points as the suggestions hit (``random_count='hits'``) or as
    there were suggestions (``'clicks'``); it never reuses an annotated point.
    """
    if random_count not in ('hits', 'clicks'):
        raise ValueError(f"random_count must be 'hits' or 'clicks', got {random_count!r}")
    infos = {str(dataset.get_data_info(i)['img_id']): dataset.get_data_info(i)
             for i in range(len(dataset))}
    taken = {t: set() for t in infos}
    hits = 0
    for r in rows:
        info = infos[r['tile']]
        xy = info['gt_points']
        free = ~info['gt_points_annotated']
        free[list(taken[r['tile']])] = False
        if not free.any():
            continue
        d = np.hypot(xy[:, 0] - r['x'], xy[:, 1] - r['y'])
        d[~free] = np.inf
        j = int(d.argmin())
        if d[j] <= radius:
            taken[r['tile']].add(j)
            hits += 1
    # indices in the point file: the dataset keeps file order (no point is dropped in these tiles)
    suggested = {t: sorted(v) for t, v in taken.items() if v}
    pool = [(t, j) for t, info in infos.items()
            for j in np.flatnonzero(~info['gt_points_annotated'])]
    rng = np.random.default_rng(seed)
    n_random = hits if random_count == 'hits' else len(rows)
    pick = rng.choice(len(pool), size=min(n_random, len(pool)), replace=False)
    random = {}
    for k in sorted(pick):
        t, j = pool[k]
        random.setdefault(t, []).append(int(j))
    return suggested, random, hits


def _arm_name(dirname: str, res: dict) -> str:
    """A run's arm: its directory name after ``<method>_r<ratio>_s<seed>_`` (a renamed copy of
    a run is its own arm), else its ratio_sweep ``--tag``."""
    prefix = f"{res.get('method')}_r{res.get('ratio', 0):g}_s{res.get('seed', 0)}"
    if dirname == prefix or dirname.startswith(prefix + '_'):
        return dirname[len(prefix) + 1:]
    return res.get('tag') or ''


def compare(run_dirs) -> str:
    """Test F1 of finished ratio_sweep runs side by side, and per arm over seeds.

    An *arm* is what follows ``<method>_r<ratio>_s<seed>_`` in the run directory's name, i.e.
    the ratio_sweep ``--tag`` (``''``: no extra clicks). With several seeds, each arm gets its mean
    ± sd and the paired gain over every other arm on the seeds both have (same seed = same
    sparse subset and training seed), with how many seeds the gain is positive.
    """
    lines = ['| run | annotated training points | val thr | test eval F1 | test det F1 | '
             'unann. recall |',
             '|---|---|---|---|---|---|']
    arms: Dict[str, Dict[int, Tuple[float, float]]] = {}
    for d in run_dirs:
        path = osp.join(d, 'result.json')
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path}: not a finished ratio_sweep run')
        res = json.load(open(path))
        t = _tk(res, res['chosen_thr'])
        ev, det = res['test_eval_f1'][t], res['test'][t]['det_f1']
        lines.append(f"| {osp.basename(osp.normpath(d))} | {res.get('annotated_points', '?')} | "
                     f"{float(t):g} | {ev:.3f} | {det:.3f} | "
                     f"{res['train'][t].get('det_unannotated_recall', 0):.3f} |")
        seed = res.get('seed', 0)
        name = _arm_name(osp.basename(osp.normpath(d)), res)
        arm = arms.setdefault(name, {})
        if seed in arm:
            raise ValueError(f'{d}: a second run of arm {name or "(no extra clicks)"!r} '
                             f'with seed {seed}')
        arm[seed] = (ev, det)
    if not any(len(a) > 1 for a in arms.values()):
        return '\n'.join(lines)

    def mean_sd(values):
        values = np.asarray(values, float)
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        return f'{values.mean():.3f} ± {sd:.3f}'

    lines += ['', '| arm | seeds | test eval F1 | test det F1 |', '|---|---|---|---|']
    for name, arm in arms.items():
        seeds = sorted(arm)
        lines.append(f"| {name or '(no extra clicks)'} | {','.join(map(str, seeds))} | "
                     f"{mean_sd([arm[s][0] for s in seeds])} | "
                     f"{mean_sd([arm[s][1] for s in seeds])} |")
    lines += ['', '| paired gain (same seeds) | seeds | eval F1 gain | > 0 on | det F1 gain | '
              '> 0 on |', '|---|---|---|---|---|---|']
    clicks = [n for n in arms if n]
    pairs = [(a, '') for a in clicks if '' in arms]  # every click arm against no clicks
    pairs += [(a, b) for i, a in enumerate(clicks) for b in clicks[i + 1:]]  # in argument order
    for a, b in pairs:
        common = sorted(set(arms[a]) & set(arms[b]))
        if not common:
            continue
        gains = [[arms[a][s][k] - arms[b][s][k] for s in common] for k in (0, 1)]
        lines.append(f"| {a} − {b or '(no extra clicks)'} | {','.join(map(str, common))} | "
                     f"{mean_sd(gains[0])} | {sum(g > 0 for g in gains[0])}/{len(common)} | "
                     f"{mean_sd(gains[1])} | {sum(g > 0 for g in gains[1])}/{len(common)} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare:
        print(compare(args.compare))
        return 0
    if not args.config or not args.checkpoint:
        raise SystemExit('suggest_clicks: give CONFIG and CHECKPOINT (or --compare RUN_DIR ...)')
    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            raise SystemExit(f'suggest_clicks: {path} not found')
    from protocal.apis import build_test_split_dataset, init_point_detector
    model = init_point_detector(args.config, args.checkpoint, device='cpu')
    cfg = model.cfg
    dataset = build_test_split_dataset(cfg, args.split, sparse_ratio=args.sparse_ratio,
                                       sparse_seed=args.sparse_seed)
    rows = top_suggestions(rank_candidates(model, cfg, dataset, args.cand_thr, args.radius),
                           args.top_n, args.per_tile)
    classes = list(dataset.metainfo['classes'])
    write_suggestions(rows, classes, args.out_dir)
    print(f'{len(rows)} suggested clicks on {len({r["tile"] for r in rows})} tiles written to '
          f'{args.out_dir} ({sum(r["disagree"] for r in rows)} with class disagreement)')
    if args.simulate:
        suggested, random, hits = simulate(rows, dataset, args.radius, args.seed,
                                           args.random_count)
        for name, extra in (('suggested', suggested), ('random', random)):
            with open(osp.join(args.out_dir, f'extra_{name}.json'), 'w') as f:
                json.dump(extra, f, indent=1)
        n_random = sum(len(v) for v in random.values())
        stats = dict(cand_thr=args.cand_thr, clicks=len(rows), suggested_hits=hits,
                     random_points=n_random,
                     random_count=args.random_count, random_seed=args.seed)
        with open(osp.join(args.out_dir, 'simulation.json'), 'w') as f:
            json.dump(stats, f, indent=1)
        print(f'simulation: {hits} of {len(rows)} suggested clicks land on an unannotated expert '
              f'cell (within {args.radius:g} px); random baseline: {n_random} unannotated expert '
              'cells')
    return 0


if __name__ == '__main__':
    sys.exit(main())
