"""Test (and evaluate) a trained protocal model (OpenMMLab conventions).

Examples::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --out work_dirs/preds.pkl      # dump predictions
    python tools/test.py CONFIG CHECKPOINT --show-dir vis                 # save drawn images
    python tools/test.py CONFIG CHECKPOINT --metrics-json metrics.json    # metrics as JSON
    bash tools/dist_test.sh CONFIG CHECKPOINT 2
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Any, List, Optional

from mmengine.config import Config, ConfigDict, DictAction


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description='Test (and evaluate) a protocal model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='directory for the log and metrics (default: work_dirs/<config name>)')
    parser.add_argument(
        '--out', help='dump the predictions to this .pkl file (mmengine DumpResults)')
    parser.add_argument(
        '--metrics-json', help='also write the evaluation metrics to this JSON file')
    parser.add_argument(
        '--show', action='store_true', help='show each prediction in a window')
    parser.add_argument(
        '--show-dir',
        help='save images with predictions drawn to this directory (relative paths are '
        'placed under work_dir/<timestamp>/ by the visualization hook)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds each image is shown with --show')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs, e.g. '
        'model.test_cfg.score_thr=0.4; lists as key="[a,b]" (no spaces)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str],
                         wait_time: float) -> Config:
    """Turn on the visualization hook's drawing for ``--show`` / ``--show-dir``.

    ``DetVisualizationHook`` (mmdet scope) writes to its ``test_out_dir``; ``SegVisualizationHook``
    (mmseg scope) writes through the visualizer, whose ``save_dir`` is set instead.

    Raises:
        ValueError: the config has no ``default_hooks.visualization`` hook.
    """
    hooks = cfg.get('default_hooks') or {}
    vis = hooks.get('visualization')
    if vis is None:
        hook = ('SegVisualizationHook' if cfg.get('default_scope') == 'mmseg' else
                'DetVisualizationHook')
        raise ValueError('--show/--show-dir need a visualization hook: add '
                         f"default_hooks.visualization=dict(type='{hook}') to the config")
    vis['draw'] = True
    if show:
        vis['show'] = True
        vis['wait_time'] = wait_time
    if show_dir:
        if str(vis.get('type', '')).split('.')[-1] == 'SegVisualizationHook':
            # mmseg's hook has no test_out_dir: the visualizer's save_dir receives the images
            if cfg.get('visualizer') is None:
                raise ValueError('--show-dir needs a `visualizer` in the config')
            cfg.visualizer['save_dir'] = show_dir
        else:
            vis['test_out_dir'] = show_dir
    return cfg


def add_dump_metric(cfg: Config, out: str) -> Config:
    """Append mmengine's ``DumpResults`` metric to ``test_evaluator`` to write ``out`` (.pkl).

    Raises:
        ValueError: ``out`` does not end with ``.pkl`` / ``.pickle``.
    """
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file, got {out!r}')
    dump = ConfigDict(type='DumpResults', out_file_path=out)
    evaluator: Any = cfg.get('test_evaluator')
    if evaluator is None:
        cfg.test_evaluator = [dump]
    elif isinstance(evaluator, (list, tuple)):
        cfg.test_evaluator = [*evaluator, dump]
    elif 'metrics' in evaluator:  # dict(type='Evaluator', metrics=...)
        metrics = evaluator['metrics']
        metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
        evaluator['metrics'] = [*metrics, dump]
    else:
        cfg.test_evaluator = [evaluator, dump]
    return cfg


def write_metrics_json(metrics: dict, path: str) -> None:
    """Write the metrics returned by ``Runner.test`` as JSON (main process only)."""
    import json

    from mmengine.dist import is_main_process
    if not is_main_process():
        return

    def to_builtin(value: Any) -> Any:
        if hasattr(value, 'tolist'):  # numpy / torch scalars and arrays
            return value.tolist()
        return value

    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump({k: to_builtin(v) for k, v in (metrics or {}).items()}, f, indent=2,
                  sort_keys=True)


def build_config(args: argparse.Namespace) -> Config:
    """Load the config and apply the command line to it.

    Raises:
        FileNotFoundError: config file, checkpoint or the test ``data_root`` is missing.
        ValueError: bad ``--out`` or an option that cannot run on this machine.
    """
    from protocal.utils import (adapt_cfg_to_device, check_data_roots, check_file_exists,
                                default_work_dir)

    check_file_exists(args.config, 'config file')
    check_file_exists(args.checkpoint, 'checkpoint', allow_remote=True)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)

    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.out is not None:
        add_dump_metric(cfg, args.out)

    check_data_roots(cfg, ['test_dataloader'])
    adapt_cfg_to_device(cfg)
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    import protocal  # noqa: F401  (registers modules, applies compatibility fixes)
    try:
        cfg = build_config(args)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f'{osp.basename(__file__)}: error: {err}') from err

    from protocal.utils import build_runner
    runner = build_runner(cfg)
    metrics = runner.test()
    if args.metrics_json:
        write_metrics_json(metrics, args.metrics_json)


if __name__ == '__main__':
    main(sys.argv[1:])
