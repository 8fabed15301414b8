"""Train and run the three MIL counting stages in order, resumable per stage.

Usage::

    python tools/mil/run_pipeline.py configs/mil/pipelines/mil_r18_endonuke-epi.py \
        --work-dir work_dirs/13/endonuke_epi [--stages counter tile pseudo seg eval] [--redo tile]

The pipeline config names one config per stage (``stages``), per-stage overrides
(``stage_options``), the pseudo-mask builder (``pseudo_mask``), the localisation (``localize``)
and the evaluation (``evaluation``); see ``configs/mil/pipelines/mil_r50_lysto.py``.

Output layout (``WORK``)::

    WORK/counter/          stage 1: config.py (the exact config), mmengine logs + checkpoints,
                           DONE.json {"checkpoint": ...} when finished
    WORK/tile/             stage 2: same (load_from = the stage-1 checkpoint)
    WORK/pseudo_masks/     img/<id>.png (RGB), ann/<id>.png (0 = background, 1 = cell),
                           heatmap/<id>.png (tile probabilities, JET), summary.json, DONE.json
    WORK/seg/              stage 3: same (load_from = the stage-2 checkpoint, data_root =
                           WORK/pseudo_masks)
    WORK/eval/             metrics.json (counting + localisation per split, chosen threshold,
                           classical baseline), per_image.csv, points/<split>/<id>.csv (x,y,score),
                           heatmaps/<split>/<id>_tiles.png and <id>_seg.png

Every stage is a normal ``tools/train.py`` run on ``WORK/<stage>/config.py`` (so a stage can
also be re-run by hand with that tool). A finished stage (``DONE.json``) is skipped; an
interrupted training stage resumes from its latest checkpoint; ``--redo STAGE`` reruns a stage
(and, because later stages depend on it, every later stage).
"""
import argparse
import csv
import importlib.util
import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

STAGES = ('counter', 'tile', 'pseudo', 'seg', 'eval')
_HERE = osp.dirname(osp.abspath(__file__))
_REPO = osp.dirname(osp.dirname(_HERE))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='MIL counting: counter -> tile classifier -> '
                                'pseudo masks -> segmentation -> evaluation')
    p.add_argument('config',
                   help='pipeline config (e.g. configs/mil/pipelines/mil_r18_endonuke-epi.py)')
    p.add_argument('--work-dir', required=True, help='output folder (layout in the docstring)')
    p.add_argument('--stages', nargs='+', choices=STAGES, default=list(STAGES),
                   help='stages to run (default: all, in order)')
    p.add_argument('--redo', choices=STAGES, default=None,
                   help='rerun this stage and every later one even if finished')
    return p.parse_args(argv)


def _train_tool():
    spec = importlib.util.spec_from_file_location('_protocal_train_tool',
                                                  osp.join(_REPO, 'tools', 'train.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _done_path(work: str, stage: str) -> str:
    return osp.join(work, 'pseudo_masks' if stage == 'pseudo' else stage, 'DONE.json')


def _read_done(work: str, stage: str) -> Optional[dict]:
    path = _done_path(work, stage)
    if osp.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


def _write_json(path: str, data: Any) -> None:
    from protocal.utils import atomic_write
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with atomic_write(path, 'w') as f:
        f.write(json.dumps(data, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.integer, )):
        return int(o)
    if isinstance(o, (np.floating, )):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _stage_checkpoint(stage_dir: str, prefer_best: bool) -> str:
    if prefer_best:
        best = sorted(n for n in os.listdir(stage_dir) if n.startswith('best_') and
                      n.endswith('.pth'))
        if best:
            return osp.join(stage_dir, best[-1])
    last = osp.join(stage_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    ckpts = sorted((n for n in os.listdir(stage_dir) if n.endswith('.pth')),
                   key=lambda n: osp.getmtime(osp.join(stage_dir, n)))
    if not ckpts:
        raise FileNotFoundError(f'no checkpoint in {stage_dir}')
    return osp.join(stage_dir, ckpts[-1])


def run_training_stage(pcfg, work: str, stage: str, load_from: Optional[str],
                       extra: Optional[dict] = None) -> str:
    """Dump the stage config to ``WORK/<stage>/config.py`` and train it with tools/train.py."""
    from mmengine.config import Config
    stage_dir = osp.join(work, stage)
    os.makedirs(stage_dir, exist_ok=True)
    cfg = Config.fromfile(pcfg.stages[stage])
    opts = dict((pcfg.get('stage_options') or {}).get(stage) or {})
    if extra:
        opts.update(extra)
    if opts:
        cfg.merge_from_dict(opts)
    cfg.work_dir = stage_dir
    cfg.experiment_name = f'mil_{stage}_{time.strftime("%Y%m%d_%H%M%S")}_{os.getpid()}'
    cfg.load_from = load_from
    cfg_path = osp.join(stage_dir, 'config.py')
    cfg.dump(cfg_path)
    has_ckpt = osp.isfile(osp.join(stage_dir, 'last_checkpoint'))
    argv = [cfg_path, '--work-dir', stage_dir] + (['--resume'] if has_ckpt else [])
    print(f'[run_pipeline] stage {stage}: tools/train.py {" ".join(argv)}', flush=True)
    _train_tool().main(argv)
    ckpt = _stage_checkpoint(stage_dir, prefer_best=(stage == 'counter'))
    _write_json(_done_path(work, stage), dict(checkpoint=ckpt, config=cfg_path))
    return ckpt


def _build_dataset(ds_cfg: dict):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = dict(ds_cfg)
    cfg['pipeline'] = []
    cfg.setdefault('test_mode', True)
    return DATASETS.build(cfg)


def run_pseudo(pcfg, work: str) -> dict:
    from mmengine.config import Config
    from protocal.apis.mil import build_pseudo_masks, init_mil_model
    c_done, t_done = _read_done(work, 'counter'), _read_done(work, 'tile')
    if c_done is None or t_done is None:
        raise RuntimeError('pseudo masks need the finished counter and tile stages')
    tile_cfg = Config.fromfile(t_done['config'])
    counter = init_mil_model(c_done['config'], c_done['checkpoint'])
    tile_model = init_mil_model(t_done['config'], t_done['checkpoint'])
    dataset = _build_dataset(tile_cfg.train_dataloader.dataset)
    pm = dict(pcfg.pseudo_mask)
    out_dir = osp.join(work, 'pseudo_masks')
    summary = build_pseudo_masks(tile_model, dataset, out_dir, counter=counter, **pm)
    _write_json(osp.join(out_dir, 'summary.json'), summary)
    _write_json(_done_path(work, 'pseudo'), dict(summary=summary))
    print(f'[run_pipeline] pseudo masks: {json.dumps(summary, default=_json_default)}', flush=True)
    return summary


def _f1(preds: List[dict], gts: List[np.ndarray], radius: float, mode: str) -> Dict[str, float]:
    from protocal.evaluation.metrics import PointF1Metric
    metric = PointF1Metric(mode=mode, radius=radius, classes=('cell', ))
    for p, g in zip(preds, gts):
        metric.process(None, [dict(
            pred_instances=dict(points=p['points'], labels=np.zeros(len(p['points']), np.int64),
                                scores=p['scores']),
            gt_instances=dict(points=g, labels=np.zeros(len(g), np.int64)))])
    m = metric.compute_metrics(metric.results)
    return dict(precision=m['cell_precision'], recall=m['cell_recall'], f1=m['cell_f1'])


def run_eval(pcfg, work: str) -> dict:
    import cv2
    from protocal.apis.mil import (_load_bgr, init_mil_model, localize_points, predict_counts,
                                   score_image_tiles, seg_probabilities)
    from protocal.evaluation.functional import count_metrics
    from protocal.models.mil import tile_heatmap
    done = {s: _read_done(work, s) for s in ('counter', 'tile', 'seg')}
    missing = [s for s, d in done.items() if d is None]
    if missing:
        raise RuntimeError(f'evaluation needs the finished stages {missing}')
    counter = init_mil_model(done['counter']['config'], done['counter']['checkpoint'])
    tile_model = init_mil_model(done['tile']['config'], done['tile']['checkpoint'])
    seg = init_mil_model(done['seg']['config'], done['seg']['checkpoint'])
    ev = dict(pcfg.evaluation)
    loc = dict(pcfg.localize)
    out_dir = osp.join(work, 'eval')
    results: Dict[str, Any] = dict(splits={})
    per_image_rows = []
    cache: Dict[str, List[dict]] = {}
    for split, ds_cfg in ev['splits'].items():
        ds = _build_dataset(ds_cfg)
        os.makedirs(osp.join(out_dir, 'heatmaps', split), exist_ok=True)
        items = []
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            bgr = _load_bgr(info)
            count = float(predict_counts(counter, [bgr])[0])
            scores, grid = score_image_tiles(tile_model, bgr)
            prob = seg_probabilities(seg, bgr)
            if info.get('valid_hw') is not None:
                vh, vw = info['valid_hw']
                prob[int(vh):] = 0
                prob[:, int(vw):] = 0
            stem = str(info['img_id'])
            heat = tile_heatmap(scores, grid, bgr.shape[:2], tile_model.tile_size)
            cv2.imwrite(osp.join(out_dir, 'heatmaps', split, f'{stem}_tiles.png'),
                        cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET))
            cv2.imwrite(osp.join(out_dir, 'heatmaps', split, f'{stem}_seg.png'),
                        (prob * 255).astype(np.uint8))
            items.append(dict(id=stem, bgr=bgr, gt_count=info.get('gt_count'), pred_count=count,
                              prob=prob, gt_points=info.get('gt_points')))
        cache[split] = items
        res: Dict[str, Any] = dict(images=len(items))
        if all(it['gt_count'] is not None for it in items) and items:
            res['counting'] = count_metrics([it['gt_count'] for it in items],
                                            [it['pred_count'] for it in items])
        results['splits'][split] = res
    # localisation: choose seed_thr on the selection split, apply everywhere
    has_points = {s: bool(its) and all(it['gt_points'] is not None for it in its)
                  for s, its in cache.items()}
    radius, mode = float(ev.get('radius', 16)), ev.get('mode', 'ocelot')
    thrs = list(ev.get('seed_thrs') or [loc.get('seed_thr', 0.2)])
    sel_split = ev.get('select_split')

    def localise(items, thr, which='pred'):
        out = []
        for it in items:
            n = dict(pred=it['pred_count'], gt=it['gt_count'], none=None)[which]
            out.append(localize_points(it['prob'], n, **dict(loc, seed_thr=thr)))
        return out

    if sel_split in cache and has_points.get(sel_split):
        sweep = {t: _f1(localise(cache[sel_split], t), [it['gt_points'] for it in
                                                        cache[sel_split]], radius, mode)['f1']
                 for t in thrs}
        chosen = max(thrs, key=lambda t: (sweep[t], -abs(t - loc.get('seed_thr', 0.2))))
        results['threshold_selection'] = dict(split=sel_split, seed_thr_f1=sweep, chosen=chosen)
    else:
        chosen = loc.get('seed_thr', 0.2)
    results['seed_thr'] = chosen
    classical = None
    if ev.get('classical_baseline'):
        from protocal.apis.classical import BlobPointDetector
        classical = BlobPointDetector(**dict(ev.get('classical_args') or {}))
    for split, items in cache.items():
        res = results['splits'][split]
        if not has_points[split]:
            continue
        gts = [np.asarray(it['gt_points'], np.float64).reshape(-1, 2) for it in items]
        preds = localise(items, chosen)
        res['localisation'] = _f1(preds, gts, radius, mode)
        res['localisation_gt_count'] = _f1(localise(items, chosen, 'gt'), gts, radius, mode)
        res['localisation_no_count_gate'] = _f1(localise(items, chosen, 'none'), gts, radius,
                                                mode)
        os.makedirs(osp.join(out_dir, 'points', split), exist_ok=True)
        for it, p in zip(items, preds):
            with open(osp.join(out_dir, 'points', split, f'{it["id"]}.csv'), 'w') as f:
                f.write('x,y,score\n')
                for (x, y), s in zip(p['points'].tolist(), p['scores'].tolist()):
                    f.write(f'{x:.1f},{y:.1f},{s:.4f}\n')
            per_image_rows.append(dict(split=split, id=it['id'], gt_count=it['gt_count'],
                                       pred_count=it['pred_count'], points=len(p['points'])))
        if classical is not None:
            cpreds = []
            for it in items:
                d = classical.predict(np.ascontiguousarray(it['bgr'][..., ::-1]))
                cpreds.append(dict(points=d['points'], scores=d['scores']))
            res['classical_localisation'] = _f1(cpreds, gts, radius, mode)
            if 'counting' in res:
                res['classical_counting'] = count_metrics(
                    [it['gt_count'] for it in items], [len(p['points']) for p in cpreds])
    _write_json(osp.join(out_dir, 'metrics.json'), results)
    with open(osp.join(out_dir, 'per_image.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=['split', 'id', 'gt_count', 'pred_count', 'points'])
        w.writeheader()
        w.writerows(per_image_rows)
    _write_json(_done_path(work, 'eval'), dict(metrics=osp.join(out_dir, 'metrics.json')))
    print('[run_pipeline] evaluation:\n' + json.dumps(results, indent=2, default=_json_default),
          flush=True)
    return results


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, _REPO)
    import protocal  # noqa: F401
    from mmengine.config import Config
    pcfg = Config.fromfile(args.config)
    for key in ('stages', 'pseudo_mask', 'localize', 'evaluation'):
        if key not in pcfg:
            raise SystemExit(f'{args.config}: pipeline config needs "{key}" '
                             '(see configs/mil/pipelines/mil_r50_lysto.py)')
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    redo_from = STAGES.index(args.redo) if args.redo else None
    out: Dict[str, Any] = {}
    for stage in STAGES:
        if stage not in args.stages:
            continue
        force = redo_from is not None and STAGES.index(stage) >= redo_from
        done = _read_done(work, stage)
        if done is not None and not force:
            print(f'[run_pipeline] stage {stage}: done ({_done_path(work, stage)}), skipped',
                  flush=True)
            out[stage] = done
            continue
        if force and done is not None:
            os.remove(_done_path(work, stage))
            if stage in ('counter', 'tile', 'seg'):
                last = osp.join(work, stage, 'last_checkpoint')
                if osp.isfile(last):
                    os.remove(last)
        t0 = time.perf_counter()
        if stage == 'counter':
            out[stage] = run_training_stage(pcfg, work, 'counter', None)
        elif stage == 'tile':
            prev = _read_done(work, 'counter')
            if prev is None:
                raise SystemExit('stage tile needs the finished counter stage')
            out[stage] = run_training_stage(pcfg, work, 'tile', prev['checkpoint'])
        elif stage == 'pseudo':
            out[stage] = run_pseudo(pcfg, work)
        elif stage == 'seg':
            prev = _read_done(work, 'tile')
            if prev is None or _read_done(work, 'pseudo') is None:
                raise SystemExit('stage seg needs the finished tile and pseudo stages')
            out[stage] = run_training_stage(
                pcfg, work, 'seg', prev['checkpoint'],
                extra={'train_dataloader.dataset.data_root': osp.join(work, 'pseudo_masks')})
        elif stage == 'eval':
            out[stage] = run_eval(pcfg, work)
        print(f'[run_pipeline] stage {stage} finished in {time.perf_counter() - t0:.1f} s',
              flush=True)
    return out


if __name__ == '__main__':
    main(sys.argv[1:])
