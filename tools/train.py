"""Train a protocal model (OpenMMLab conventions).

Examples::

    python tools/train.py configs/pcl/pcl_demo_cpu.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --cfg-options train_cfg.max_epochs=5
    python tools/train.py CONFIG --resume                 # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume work_dirs/run1/epoch_10.pth
    bash tools/dist_train.sh CONFIG 2                     # 2 processes (gloo on CPU)
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description='Train a protocal model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--work-dir', help='directory for logs and checkpoints (default: work_dirs/<config name>)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a path, resume from the latest checkpoint '
        'in the work directory')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision training (needs CUDA)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs, e.g. train_cfg.max_epochs=5 '
        'optim_wrapper.optimizer.lr=1e-3; lists as key="[a,b]" (no spaces)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Load the config and apply the command line to it.

    Raises:
        FileNotFoundError: config file, ``--resume`` checkpoint or a dataset ``data_root`` is
            missing.
        ValueError: an option cannot run on this machine (``--amp`` without CUDA, SyncBN on CPU).
    """
    from protocal.utils import (adapt_cfg_to_device, check_data_roots, check_file_exists,
                                default_work_dir)

    check_file_exists(args.config, 'config file')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir priority: command line > config > work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)

    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise ValueError('--amp (automatic mixed precision) needs a CUDA device, but this '
                             'machine has none; train without --amp on CPU.')
        optim_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_type not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'--amp replaces optim_wrapper.type, but the config uses '
                             f'{optim_type!r}; set AmpOptimWrapper in the config instead.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    # resume: an explicit checkpoint, or 'auto' = the latest one in work_dir
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_file_exists(args.resume, 'checkpoint to resume from', allow_remote=True)
        cfg.resume = True
        cfg.load_from = args.resume

    keys = ['train_dataloader']
    if cfg.get('val_cfg') is not None:
        keys.append('val_dataloader')
    check_data_roots(cfg, keys)
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
    runner.train()


if __name__ == '__main__':
    main(sys.argv[1:])
