#!/usr/bin/env python
"""Plain soft-CE vs SEL vs PCL on real expert points, over annotation ratios and seeds.

Every run trains one config with ``tools/train.py`` (the standard MMEngine Runner, in its own
process) with the ratio / seed / schedule set by ``--cfg-options``, then evaluates the trained
model here:

1. one forward pass per tile of val, test and train; the probability maps are decoded by the
   model's head at every threshold of ``--thrs``;
2. **the threshold is chosen on val, per run** (best val F1: mean F1 of the classes that have
   ground truth in val for multi-class models, F1 for single-class ones) -- the test split is
   never used to choose anything;
3. test: per-class precision / recall / F1, mF1 and class-agnostic detection F1 at the chosen
   threshold and at the papers' 0.1;
4. train tiles: recall of the **never-annotated** training cells (the cells the sparse subset
   left out) at the same thresholds.

A classical detector (blobs of the smoothed haematoxylin + DAB optical density, its three
parameters chosen on val by class-agnostic F1, see :func:`classical_baseline`) is scored on the
same test tiles and drawn as a line.

Outputs in ``--work-dir``: ``<method>_r<ratio>_s<seed>/`` (the run: checkpoint, logs,
``result.json``), ``results.json`` (every run), ``results.md`` (table, mean ± sd over seeds) and
``f1_vs_ratio.png``.

Resumable: a run with ``result.json`` is never retrained; a run whose training was interrupted
resumes from its last checkpoint (``--resume`` of tools/train.py); a trained run without
``result.json`` (or evaluated at fewer thresholds than ``--thrs``) is only evaluated. ``--budget-min`` stops before a run that would not finish in
the budget (estimated from the runs done so far), so that long grids run in chunks::

    # chunks of <= 11 min on a shared machine; re-run the same command until it says "complete"
    flock /tmp/protocal-cpu.lock env OMP_NUM_THREADS=2 python tools/analysis_tools/ratio_sweep.py \\
        --dataset endonuke --grid default --budget-min 11

Grids (``--grid``; runs are ordered so that partial results are already comparisons):

* ``default`` (CPU): 10% for plain-3, PCL, SEL and plain-1 (the single-class baseline of SEL),
  seeds 0-2; 50% and 100% for plain-3 and PCL (single-class datasets: plain-1 and SEL), seed 0;
* ``small`` (what fits a few CPU minutes): 10% for the four methods, seed 0 only;
* ``full`` (GPU): 5 / 10 / 20 / 50 / 100% x seeds 0-2 for all four methods.

``--methods``, ``--ratios`` and ``--seeds`` restrict a grid. The seed sets both the training seed
and the sparse subset (``sparse_seed``); all methods with the same ratio and seed see the same
annotated points.
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))

DATASETS = {
    'endonuke': dict(
        configs=dict(
            plain='configs/pointdet/heatmap_r18-fpn_20e_endonuke-10pct.py',
            pcl='configs/pcl/pcl_r18-fpn_20e_endonuke-10pct.py',
            sel='configs/sel/sel_r18-fpn_20e_endonuke-nucleus-10pct.py',
            plain1='configs/pointdet/heatmap_r18-fpn_20e_endonuke-nucleus-10pct.py'),
        split_file='data/real/splits/endonuke_block.json'),
    'dsb2018_he': dict(
        configs=dict(
            plain1='configs/pointdet/heatmap_r18-fpn_20e_dsb2018-he-10pct.py',
            sel='configs/sel/sel_r18-fpn_20e_dsb2018-he-10pct.py'),
        split_file='data/real/splits/dsb2018_he_group.json'),
}
LABELS = {
    'plain': 'plain soft CE, 3 classes',
    'plain1': 'plain soft CE, 1 class',
    'sel': 'SEL, 1 class',
    'pcl': 'PCL, 3 classes',
}
COLOURS = {'plain': '#777777', 'plain1': '#bbbbbb', 'sel': '#e69f00', 'pcl': '#0072b2'}
DEFAULT_THRS = (0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                0.6, 0.7)
PAPER_THR = 0.1


def grid_runs(grid: str, methods: Sequence[str]) -> List[Tuple[str, float, int]]:
    """``[(method, ratio, seed)]`` of a named grid, in run order, restricted to ``methods``."""
    four = ['plain', 'pcl', 'sel', 'plain1']
    # the ratio curve: plain-3 and PCL where the dataset has classes, else plain-1 and SEL
    curve = [m for m in ('plain', 'pcl') if m in methods] or ['plain1', 'sel']
    if grid == 'small':
        runs = [(m, 0.1, 0) for m in four]
    elif grid == 'default':
        runs = [(m, 0.1, 0) for m in four]
        runs += [(m, r, 0) for r in (1.0, 0.5) for m in curve]
        runs += [(m, 0.1, s) for s in (1, 2) for m in four]
    elif grid == 'full':
        runs = [(m, r, s) for s in (0, 1, 2) for r in (0.1, 1.0, 0.05, 0.2, 0.5) for m in four]
    else:
        raise ValueError(f'unknown grid {grid!r}')
    return [r for r in runs if r[0] in methods]


def run_name(method: str, ratio: float, seed: int, tag: str = '') -> str:
    return f'{method}_r{ratio:g}_s{seed}' + (f'_{tag}' if tag else '')


# ---------------------------------------------------------------------------------- training
def train_overrides(ratio: float, seed: int, epochs: Optional[int],
                    split_file: Optional[str], extra_annotated: Optional[str] = None
                    ) -> List[str]:
    """``--cfg-options`` of one run."""
    opts = [f'train_dataloader.dataset.extra_annotated={extra_annotated}'] \
        if extra_annotated else []
    opts += [f'train_dataloader.dataset.sparse_ratio={ratio}',
            f'train_dataloader.dataset.sparse_seed={seed}',
            f'train_dataloader.sampler.seed={seed}',
            f'randomness.seed={seed}']
    if epochs is not None:
        opts += [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
                 f'param_scheduler.1.end={epochs}',
                 f'default_hooks.checkpoint.interval={max(1, epochs // 3)}']
    if split_file:
        opts += [f'{k}_dataloader.dataset.split_file={split_file}'
                 for k in ('train', 'val', 'test')]
    return opts


def train_run(config: str, run_dir: str, overrides: Sequence[str], python: str,
              log_file: str) -> float:
    """Train in a subprocess (resuming when a checkpoint exists); returns its CPU seconds."""
    cmd = [python, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', run_dir,
           '--cfg-options', *overrides]
    if osp.isfile(osp.join(run_dir, 'last_checkpoint')):
        cmd.insert(4, '--resume')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, PYTHONHASHSEED='0')
    env.setdefault('OMP_NUM_THREADS', '2')
    os.makedirs(run_dir, exist_ok=True)
    with open(log_file, 'a') as log:
        log.write('$ ' + ' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f'training failed (exit {proc.returncode}); see {log_file}')
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# -------------------------------------------------------------------------------- evaluation
def _dataset_cfg(cfg, split: str, ratio: Optional[float] = None, seed: int = 0,
                 extra_annotated: Optional[str] = None) -> dict:
    ds = copy.deepcopy(cfg.test_dataloader.dataset)
    ds['split'] = split
    ds['test_mode'] = True
    if ratio is not None:
        ds['sparse_ratio'] = ratio
        ds['sparse_seed'] = seed
        if extra_annotated:
            ds['extra_annotated'] = extra_annotated
    return ds


def forward_cache(model, dataset) -> list:
    """``[(logits, data sample)]``: one forward pass per tile."""
    import torch
    from mmengine.dataset import pseudo_collate
    cached = []
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            logits, _ = model.head(model.extract_feat(batch['inputs']))
            cached.append((logits.cpu(), batch['data_samples'][0]))
    return cached


def score_thresholds(model, cfg, cached, metainfo, thrs) -> Dict[float, dict]:
    """``{thr: metrics}`` of cached logits decoded by the head at every threshold."""
    from mmdet.registry import METRICS, TASK_UTILS

    from protocal.apis import test_metric_cfg
    evaluator_cfg = test_metric_cfg(cfg)
    original = model.head.codec
    out = {}
    try:
        for thr in thrs:
            codec_cfg = copy.deepcopy(cfg.model.head.codec)
            codec_cfg.update(score_thr=float(thr), num_classes=cfg.model.head.num_classes)
            model.head.codec = TASK_UTILS.build(codec_cfg)
            metric = METRICS.build(copy.deepcopy(evaluator_cfg))
            metric.dataset_meta = metainfo
            for logits, sample in cached:
                res = sample.clone()
                res.pred_instances = model.head.predict_by_feat(logits, [res])[0][0]
                metric.process({}, [res.to_dict()])
            out[float(thr)] = {k.split('/', 1)[-1]: float(v)
                               for k, v in metric.evaluate(len(cached)).items()}
    finally:
        model.head.codec = original
    return out


def class_gt_counts(dataset) -> np.ndarray:
    k = len(dataset.metainfo['classes'])
    labels = [dataset.get_data_info(i)['gt_points_labels'] for i in range(len(dataset))]
    return np.bincount(np.concatenate(labels + [np.zeros(0, np.int64)]), minlength=k)


def selection_score(metrics: dict, classes: Sequence[str], present: Sequence[bool]) -> float:
    """Mean F1 over the classes with GT (the F1 of a single-class model)."""
    from protocal.evaluation.metrics.point_f1_metric import _key
    f1s = [metrics[f'{_key(c)}_f1'] for c, p in zip(classes, present) if p]
    return float(np.mean(f1s)) if f1s else 0.0


def evaluate_run(config: str, checkpoint: str, ratio: float, seed: int,
                 thrs: Sequence[float], extra_annotated: Optional[str] = None) -> dict:
    """Val-chosen threshold, test and train-unannotated metrics of one trained run."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    from protocal.apis import init_point_detector
    model = init_point_detector(config, checkpoint, device='cpu',
                                cfg_options={'model.head.test_cfg.return_heatmap': False})
    cfg = model.cfg
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    thrs = sorted(set(float(t) for t in thrs) | {PAPER_THR})
    result = dict(thrs=thrs)
    datasets = {
        'val': DATASETS.build(_dataset_cfg(cfg, 'val')),
        'test': DATASETS.build(_dataset_cfg(cfg, 'test')),
        'train': DATASETS.build(_dataset_cfg(cfg, 'train', ratio, seed, extra_annotated)),
    }
    classes = list(datasets['val'].metainfo['classes'])
    scores = {}
    for split, ds in datasets.items():
        cached = forward_cache(model, ds)
        scores[split] = score_thresholds(model, cfg, cached, ds.metainfo, thrs)
    val_present = class_gt_counts(datasets['val']) > 0
    test_present = class_gt_counts(datasets['test']) > 0
    val_sel = {t: selection_score(m, classes, val_present) for t, m in scores['val'].items()}
    best = max(thrs, key=lambda t: (val_sel[t], -abs(t - PAPER_THR)))
    result.update(
        annotated_points=int(sum(datasets['train'].get_data_info(i)['gt_points_annotated'].sum()
                                 for i in range(len(datasets['train'])))),
        classes=classes,
        val_present=val_present.tolist(),
        test_present=test_present.tolist(),
        test_gt=class_gt_counts(datasets['test']).tolist(),
        chosen_thr=best,
        val_score=val_sel,
        val=scores['val'],
        test=scores['test'],
        train=scores['train'],
        test_eval_f1={t: selection_score(m, classes, test_present)
                      for t, m in scores['test'].items()})
    return result


# ----------------------------------------------------------------------------------- classical
def _od_blobs(rgb, sigma, min_distance, threshold_rel):
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian

    from protocal.apis.classical import rgb_to_hed
    hed = rgb_to_hed(rgb)
    od = np.clip(hed[..., 0], 0, None) + np.clip(hed[..., 2], 0, None)
    hi = np.percentile(od, 99.8)
    if not hi > 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    smooth = gaussian(np.clip(od / hi, 0, 1), sigma=sigma)
    peaks = peak_local_max(smooth, min_distance=min_distance, threshold_rel=threshold_rel,
                           exclude_border=False)
    return (np.stack([peaks[:, 1], peaks[:, 0]], 1).astype(np.float32).reshape(-1, 2),
            smooth[peaks[:, 0], peaks[:, 1]].astype(np.float32))


def classical_baseline(config: str, split_file: Optional[str] = None) -> dict:
    """Class-agnostic classical detector, parameters chosen on val, scored on test.

    Peaks of the Gaussian-smoothed haematoxylin + DAB optical density (colour deconvolution;
    DAB is included because ER/PR-positive nuclei are brown), grid over
    sigma x min_distance x threshold_rel, best val F1; the metric is the config's.
    """
    from mmdet.registry import DATASETS, METRICS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import protocal  # noqa: F401
    from protocal.apis import test_metric_cfg
    cfg = Config.fromfile(config)
    if split_file:
        for k in ('val', 'test'):
            cfg[f'{k}_dataloader'].dataset.split_file = split_file
    init_default_scope('mmdet')
    evaluator_cfg = test_metric_cfg(cfg)

    def load(split):
        ds_cfg = _dataset_cfg(cfg, split)
        ds_cfg['pipeline'] = [dict(type='LoadHistologyImage'), dict(type='CropToValidRegion')] \
            if 'Endo' in ds_cfg['type'] else [dict(type='LoadHistologyImage')]
        ds = DATASETS.build(ds_cfg)
        items = []
        for i in range(len(ds)):
            r = ds[i]
            items.append((r['img'][..., ::-1].copy(), r['gt_points'], r['img_path'],
                          r.get('img_id')))
        return items

    def score(items, params):
        metric = METRICS.build(dict(copy.deepcopy(evaluator_cfg), classes=['nucleus']))
        for rgb, gt, path, img_id in items:
            pts, sc = _od_blobs(rgb, *params)
            metric.process({}, [dict(
                img_path=path, pred_instances=dict(points=pts, labels=np.zeros(len(pts), int),
                                                   scores=sc),
                gt_instances=dict(points=np.asarray(gt, np.float32),
                                  labels=np.zeros(len(gt), int)))])
        m = metric.evaluate(len(items))
        return {k.split('/', 1)[-1]: float(v) for k, v in m.items()}

    val, test = load('val'), load('test')
    grid = [(s, d, t) for s in (1.5, 2.0, 3.0) for d in (3, 4, 6) for t in (0.2, 0.3, 0.4, 0.5)]
    val_scores = [(score(val, p), p) for p in grid]
    best = max(val_scores, key=lambda x: x[0]['nucleus_f1'])
    return dict(params=dict(zip(('sigma', 'min_distance', 'threshold_rel'), best[1])),
                val=best[0], test=score(test, best[1]))


# ------------------------------------------------------------------------------------ report
def _ms(values: Sequence[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return '–'
    if len(values) == 1:
        return f'{values[0]:.3f}'
    return f'{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}'


def _cpu(values: Sequence[float]) -> str:
    if not values:
        return '–'
    return f'{np.mean(values):.1f}' + (f' ({min(values):.1f}–{max(values):.1f})'
                                        if len(values) > 1 else '')


def summarize(results: Dict[str, dict]) -> List[dict]:
    """One row per (method, ratio) with the per-seed values."""
    from protocal.evaluation.metrics.point_f1_metric import _key
    groups: Dict[Tuple[str, float], List[dict]] = {}
    for res in results.values():
        groups.setdefault((res['method'], res['ratio']), []).append(res)
    rows = []
    for (method, ratio), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        runs = sorted(runs, key=lambda r: r['seed'])
        row = dict(method=method, ratio=ratio, seeds=[r['seed'] for r in runs])
        row['thr'] = [r['chosen_thr'] for r in runs]
        for tag, pick in (('chosen', lambda r: r['chosen_thr']), ('paper', lambda r: PAPER_THR)):
            row[f'eval_f1_{tag}'] = [r['test_eval_f1'][_tk(r, pick(r))] for r in runs]
            row[f'det_f1_{tag}'] = [r['test'][_tk(r, pick(r))]['det_f1'] for r in runs]
            # a fully annotated run has no never-annotated cells: no recall to report ('–')
            row[f'unann_recall_{tag}'] = [
                None if r['ratio'] >= 1 else
                r['train'][_tk(r, pick(r))].get('det_unannotated_recall') for r in runs]
            classes = runs[0]['classes']
            for c, present in zip(classes, runs[0]['test_present']):
                for q in ('precision', 'recall', 'f1'):
                    row[f'{c}_{q}_{tag}'] = ([r['test'][_tk(r, pick(r))][f'{_key(c)}_{q}']
                                              for r in runs] if present else [])
        row['classes'] = runs[0]['classes']
        row['test_present'] = runs[0]['test_present']
        row['cpu_min'] = [r['train_cpu_s'] / 60 for r in runs if r.get('train_cpu_s')]
        rows.append(row)
    return rows


def _tk(res: dict, thr: float):
    """Key of ``thr`` in a result loaded from JSON (keys are strings there)."""
    d = res['test']
    for k in d:
        if abs(float(k) - thr) < 1e-9:
            return k
    raise KeyError(thr)


def markdown(rows: List[dict], classical: Optional[dict], title: str) -> str:
    lines = [f'### {title}', '',
             'Test split only (never used to choose anything); threshold chosen on val per run. '
             'Mean ± sd over seeds where there are several. *eval F1* = mean F1 over the '
             'classes with test GT (3-class models) or F1 (1-class models); *det F1* = '
             'class-agnostic; *unann. recall* = recall of the never-annotated training cells '
             '(class-agnostic).', '',
             '| method | annotated | seeds | val thr | eval F1 @val thr | eval F1 @0.1 | '
             'det F1 @val thr | det F1 @0.1 | unann. recall @val thr | unann. recall @0.1 | '
             'CPU min/run |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(
            f"| {LABELS.get(r['method'], r['method'])} | {r['ratio'] * 100:g}% | "
            f"{','.join(str(s) for s in r['seeds'])} | "
            f"{','.join(f'{t:g}' for t in r['thr'])} | {_ms(r['eval_f1_chosen'])} | "
            f"{_ms(r['eval_f1_paper'])} | {_ms(r['det_f1_chosen'])} | {_ms(r['det_f1_paper'])} | "
            f"{_ms(r['unann_recall_chosen'])} | {_ms(r['unann_recall_paper'])} | "
            f"{_cpu(r['cpu_min'])} |")
    if classical:
        t = classical['test']
        f1 = f"{t['nucleus_f1']:.3f}"
        lines.append(f'| classical OD blobs (no training; params chosen on val) | – | – | – | '
                     f'{f1} (1 class) | – | {f1} | – | – | – | 0 |')
    # per-seed values of the rows with several seeds (same seed = same annotated points)
    seeded = [r for r in rows if len(r['seeds']) > 1]
    if seeded:
        seeds = sorted({s for r in seeded for s in r['seeds']})
        lines += ['', 'Per seed on test at the val-chosen threshold (eval F1 / det F1; one value '
                  'for 1-class models). The same seed means the same annotated points and '
                  'training seed for every method.', '',
                  '| method | annotated | ' + ' | '.join(f'seed {s}' for s in seeds) + ' |',
                  '|---|---|' + '---|' * len(seeds)]
        for r in seeded:
            cells = []
            for s in seeds:
                if s not in r['seeds']:
                    cells.append('–')
                    continue
                i = r['seeds'].index(s)
                ev, det = r['eval_f1_chosen'][i], r['det_f1_chosen'][i]
                cells.append(f'{ev:.3f}' if len(r['classes']) == 1 else f'{ev:.3f} / {det:.3f}')
            lines.append(f"| {LABELS.get(r['method'], r['method'])} | {r['ratio'] * 100:g}% | "
                         + ' | '.join(cells) + ' |')
    # per-class table at the chosen threshold
    multi = [r for r in rows if len(r['classes']) > 1]
    if multi:
        classes = [c for c, p in zip(multi[0]['classes'], multi[0]['test_present']) if p]
        lines += ['', 'Per class on test at the val-chosen threshold (P / R / F1):', '',
                  '| method | annotated | ' + ' | '.join(classes) + ' |',
                  '|---|---|' + '---|' * len(classes)]
        for r in multi:
            cells = [f"{_ms(r[f'{c}_precision_chosen'])} / {_ms(r[f'{c}_recall_chosen'])} / "
                     f"{_ms(r[f'{c}_f1_chosen'])}" for c in classes]
            lines.append(f"| {LABELS.get(r['method'], r['method'])} | {r['ratio'] * 100:g}% | "
                         + ' | '.join(cells) + ' |')
        absent = [c for c, p in zip(multi[0]['classes'], multi[0]['test_present']) if not p]
        if absent:
            lines += ['', f'Classes without test GT (not scored): {", ".join(absent)}.']
    return '\n'.join(lines) + '\n'


def plot(rows: List[dict], classical: Optional[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    multi = any(len(r['classes']) > 1 for r in rows)
    fig, axes = plt.subplots(1, 2 if multi else 1, figsize=(10 if multi else 5.5, 4),
                             squeeze=False)
    panels = [('det_f1_chosen', 'detection F1, class-agnostic (test)')]
    if multi:
        panels.append(('eval_f1_chosen', 'mean per-class F1 (test)'))
    for ax, (key, ylabel) in zip(axes[0], panels):
        for method in sorted({r['method'] for r in rows}):
            rs = sorted([r for r in rows if r['method'] == method], key=lambda r: r['ratio'])
            if key == 'eval_f1_chosen' and len(rs[0]['classes']) == 1:
                continue
            x = [r['ratio'] * 100 for r in rs]
            y = [np.mean(r[key]) for r in rs]
            e = [np.std(r[key], ddof=1) if len(r[key]) > 1 else 0 for r in rs]
            ax.errorbar(x, y, yerr=e, marker='o', capsize=3, label=LABELS.get(method, method),
                        color=COLOURS.get(method))
            for r in rs:
                ax.scatter([r['ratio'] * 100] * len(r[key]), r[key], s=10,
                           color=COLOURS.get(method), alpha=0.5)
        if classical and key == 'det_f1_chosen':
            ax.axhline(classical['test']['nucleus_f1'], ls='--', color='k', lw=1,
                       label='classical (no training)')
        ax.set_xscale('log')
        ticks = sorted({r['ratio'] * 100 for r in rows})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f'{t:g}%' for t in ticks])
        ax.set_xlabel('annotated nuclei in training tiles')
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc='lower right')
    fig.suptitle(title + '; threshold chosen on val per run', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', choices=sorted(DATASETS), default='endonuke')
    parser.add_argument('--grid', choices=['small', 'default', 'full'], default='default')
    parser.add_argument('--methods', nargs='+', help='restrict to these methods '
                        '(plain, pcl, sel, plain1)')
    parser.add_argument('--ratios', nargs='+', type=float, help='restrict to these ratios')
    parser.add_argument('--seeds', nargs='+', type=int, help='restrict to these seeds')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs (default: the configs\' 20)')
    parser.add_argument('--split-file', help='split JSON (default: the dataset\'s)')
    parser.add_argument('--thrs', nargs='+', type=float, default=list(DEFAULT_THRS))
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/ratio_sweep/<dataset>[_<split file stem>]')
    parser.add_argument('--budget-min', type=float, default=None,
                        help='stop before a run that would end after this many wall minutes')
    parser.add_argument('--report-only', action='store_true',
                        help='only rebuild results.md / the plot from finished runs')
    parser.add_argument('--no-classical', action='store_true')
    parser.add_argument('--config-override', nargs=2, action='append', default=[],
                        metavar=('METHOD', 'CONFIG'), help='use another config for a method')
    parser.add_argument('--python', default=sys.executable)
    parser.add_argument('--extra-annotated', help='JSON {tile: [point indices]} annotated in '
                        'addition to the sparse subset (suggest_clicks.py --simulate)')
    parser.add_argument('--tag', default='', help='suffix of the run names (with '
                        '--extra-annotated)')
    parser.add_argument('--classical-only', metavar='CONFIG',
                        help='only score the classical detector on the val/test splits of CONFIG '
                        'and write classical_{val,test}.json to --classical-out')
    parser.add_argument('--classical-out', default='.')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.classical_only:
        res = classical_baseline(args.classical_only, args.split_file)
        os.makedirs(args.classical_out, exist_ok=True)
        for split in ('val', 'test'):
            with open(osp.join(args.classical_out, f'classical_{split}.json'), 'w') as f:
                json.dump(dict(res[split], params=res['params']), f, indent=1)
        print(f"classical detector {res['params']} (chosen on val): test F1 "
              f"{res['test']['nucleus_f1']:.3f}, P {res['test']['nucleus_precision']:.3f}, "
              f"R {res['test']['nucleus_recall']:.3f}")
        return 0
    spec = DATASETS[args.dataset]
    configs = dict(spec['configs'])
    configs.update(dict(args.config_override))
    split_file = args.split_file or spec['split_file']
    suffix = '' if args.split_file is None else '_' + osp.splitext(osp.basename(split_file))[0]
    work_dir = args.work_dir or osp.join('work_dirs', 'ratio_sweep', args.dataset + suffix)
    os.makedirs(work_dir, exist_ok=True)
    methods = [m for m in (args.methods or ['plain', 'pcl', 'sel', 'plain1']) if m in configs]
    runs = grid_runs(args.grid, methods)
    if args.ratios:
        runs = [r for r in runs if any(abs(r[1] - x) < 1e-9 for x in args.ratios)]
    if args.seeds:
        runs = [r for r in runs if r[2] in args.seeds]
    start = time.time()
    durations = []
    done_all = True
    for method, ratio, seed in runs:
        if args.report_only:
            break
        name = run_name(method, ratio, seed, args.tag)
        run_dir = osp.join(work_dir, name)
        result_path = osp.join(run_dir, 'result.json')
        if osp.isfile(result_path):
            with open(result_path) as f:
                evaluated = set(json.load(f).get('thrs', []))
            if set(float(t) for t in args.thrs) <= evaluated:
                continue
            print(f'[ratio_sweep] {name}: re-evaluating at the thresholds {sorted(args.thrs)}')
        state_path = osp.join(run_dir, 'train_state.json')
        state = json.load(open(state_path)) if osp.isfile(state_path) else {}
        estimate = np.mean(durations) if durations else _prior_estimate(work_dir)
        if state.get('trained'):
            estimate = 30.0  # evaluation only
        if args.budget_min is not None and \
                (time.time() - start + estimate) / 60 > args.budget_min:
            print(f'[ratio_sweep] budget of {args.budget_min:g} min reached before {name} '
                  f'(estimated {estimate / 60:.1f} min); run the same command again to resume')
            done_all = False
            break
        t0 = time.time()
        print(f'[ratio_sweep] {name}: '
              + ('trained already' if state.get('trained') else f'training {configs[method]}'),
              flush=True)
        if state.get('trained'):
            state['evaluated_only'] = True
        else:
            cpu = train_run(configs[method], run_dir,
                            train_overrides(ratio, seed, args.epochs, split_file,
                                            args.extra_annotated), args.python,
                            osp.join(run_dir, 'train_stdout.log'))
            state = dict(trained=True, cpu_s=state.get('cpu_s', 0.0) + cpu,
                         wall_s=time.time() - t0, epochs=args.epochs)
            with open(state_path, 'w') as f:
                json.dump(state, f)
        checkpoint = open(osp.join(run_dir, 'last_checkpoint')).read().strip()
        dumped = osp.join(run_dir, osp.basename(configs[method]))
        config = dumped if osp.isfile(dumped) else configs[method]
        print(f'[ratio_sweep] {name}: evaluating {checkpoint}', flush=True)
        result = evaluate_run(config, checkpoint, ratio, seed, args.thrs, args.extra_annotated)
        result.update(method=method, ratio=ratio, seed=seed, config=configs[method],
                      tag=args.tag, extra_annotated=args.extra_annotated,
                      train_cpu_s=state['cpu_s'], train_wall_s=state.get('wall_s'),
                      epochs=state.get('epochs'), split_file=split_file)
        with open(result_path, 'w') as f:
            json.dump(result, f, indent=1)
        if not state.get('evaluated_only'):
            durations.append(time.time() - t0)
            _save_duration(work_dir, durations[-1])
        print(f'[ratio_sweep] {name}: thr {result["chosen_thr"]:g} (val), test eval F1 '
              f'{result["test_eval_f1"][result["chosen_thr"]]:.3f}, det F1 '
              f'{result["test"][result["chosen_thr"]]["det_f1"]:.3f}; train CPU '
              f'{state["cpu_s"] / 60:.1f} min', flush=True)
    # report
    results = {}
    for method, ratio, seed in grid_runs('full', list(configs)) + runs:
        path = osp.join(work_dir, run_name(method, ratio, seed), 'result.json')
        if osp.isfile(path):  # tagged runs (extra clicks) are reported by suggest_clicks.py
            with open(path) as f:
                results[run_name(method, ratio, seed)] = json.load(f)
    classical = None
    if not args.no_classical:
        cpath = osp.join(work_dir, 'classical.json')
        if osp.isfile(cpath):
            classical = json.load(open(cpath))
        elif not args.report_only and done_all:
            any_cfg = next(iter(configs.values()))
            classical = classical_baseline(any_cfg, split_file)
            with open(cpath, 'w') as f:
                json.dump(classical, f, indent=1)
    with open(osp.join(work_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    if results:
        rows = summarize(results)
        title = (f'{args.dataset}, split {osp.basename(split_file)}, ResNet-18 + FPN, '
                 f'{_epochs_text(results)}, CPU')
        text = markdown(rows, classical, title)
        with open(osp.join(work_dir, 'results.md'), 'w') as f:
            f.write(text)
        plot(rows, classical, osp.join(work_dir, 'f1_vs_ratio.png'), title)
        print(text)
    missing = [run_name(*r, args.tag) for r in runs
               if not osp.isfile(osp.join(work_dir, run_name(*r, args.tag), 'result.json'))]
    print(f'[ratio_sweep] {len(runs) - len(missing)}/{len(runs)} runs of the grid done'
          + ('; complete' if not missing else f'; missing: {", ".join(missing)}'))
    return 0


def _epochs_text(results: Dict[str, dict]) -> str:
    epochs = sorted({r.get('epochs') or 20 for r in results.values()})
    return f'{"/".join(str(e) for e in epochs)} epochs'


def _prior_estimate(work_dir: str) -> float:
    path = osp.join(work_dir, 'durations.json')
    if osp.isfile(path):
        values = json.load(open(path))
        if values:
            return float(np.mean(values))
    return 0.0


def _save_duration(work_dir: str, seconds: float) -> None:
    path = osp.join(work_dir, 'durations.json')
    values = json.load(open(path)) if osp.isfile(path) else []
    values.append(seconds)
    with open(path, 'w') as f:
        json.dump(values, f)


if __name__ == '__main__':
    sys.exit(main())
