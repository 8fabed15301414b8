"""Check a downloaded LYSTO HDF5 file and print a summary (images, organs, count categories).

Usage::

    python tools/mil/check_lysto.py data/lysto/training.h5 [--expect-n 20000] [--json out.json]

Exits with status 1 and a message naming the problem (missing key, wrong image shape, a negative /
non-integer / missing count with its index, ...) when the file is not as distributed.
"""
import argparse
import json
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('h5', help='training.h5 or test.h5')
    p.add_argument('--expect-n', type=int, default=None,
                   help='expected number of images (training.h5: 20000)')
    p.add_argument('--json', default=None, help='also write the summary to this file')
    args = p.parse_args(argv)
    from protocal.datasets.lysto import check_lysto_h5
    from protocal.datasets.counting import COUNT_CATEGORY_NAMES
    try:
        summary = check_lysto_h5(args.h5, args.expect_n)
    except (OSError, ValueError) as e:
        print(f'check_lysto: {args.h5}: FAILED: {e}', file=sys.stderr)
        return 1
    print(f'{args.h5}: OK, {summary["images"]} images of {summary["shape"][1]}x'
          f'{summary["shape"][2]}, counts: {"yes" if summary["has_counts"] else "no (test file)"}')
    if 'organs' in summary:
        print('  organs: ' + ', '.join(f'{k} {v}' for k, v in sorted(summary['organs'].items())))
    if summary.get('unknown_organs'):
        print(f'  WARNING: unknown organ prefixes {summary["unknown_organs"]}')
    if summary['has_counts']:
        cats = ', '.join(f'{n}: {c}' for n, c in zip(COUNT_CATEGORY_NAMES,
                                                     summary['count_categories']))
        print(f'  count categories: {cats}')
        print(f'  counts {summary["count_min"]}..{summary["count_max"]}, mean '
              f'{summary["count_mean"]:.2f}, zero-count images {summary["zero_count_images"]}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
