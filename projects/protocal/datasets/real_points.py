"""Point datasets with real expert annotation: EndoNuke (IHC, 3 classes) and DSB2018 H&E tiles.

Both read the *tile-folder* layout that the bundled subsets in ``data/real/`` use and that the
converters in ``tools/dataset_converters/`` write from the datasets' published layouts
(``endonuke_to_points.py``, ``dsb2018_to_points.py``)::

    <data_root>/manifest.csv                  one row per tile (id column: stem / id12)
    <data_root>/<id>/image.png                RGB uint8
    <data_root>/<id>/points.csv               EndoNuke: x,y,class (stroma / epithelium / other)
    <data_root>/<id>/labels.png, centroids.csv DSB2018: uint16 instances; label,y,x,area_px

Which tiles belong to a split comes from a JSON split file (``data/real/splits/*.json``, written by
``tools/dataset_converters/make_real_splits.py``):
``{"train": [ids], "val": [...], "test": [...]}``.
A split file naming a tile that is not on disk is an error.

Sparse annotation is frozen at construction (``sparse_ratio``): the subset of every tile is drawn
by :func:`~protocal.datasets.transforms.sample_sparse_subset` with the generator
``sparse_rng(sparse_seed, <tile id>)`` on the tile's **source classes** (before any
``class_map``), so a single-class view (SEL) and the multi-class view (PCL) of the same tiles see
exactly the same annotated points. ``SparsePointSampling`` in a pipeline then leaves the flags as
they are (the samples are ``sparse_frozen``). Keying the generator by the tile id matters here:
every tile's image is called ``image.png``, so the file-name key of ``SparsePointSampling`` would
give every tile the same random stream.
"""
import csv
import json
import logging
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmdet.registry import DATASETS, TRANSFORMS
from .annotation_io import RawPoints, read_csv_points
from .point_dataset import PointDataset
from .transforms.sparse_sampling import MODES, sample_sparse_subset, sparse_rng

__all__ = [
    'read_split_ids', 'read_dsb_centroids', 'trailing_black_extent', 'TileFolderPointDataset',
    'EndoNukePointDataset', 'DSB2018PointDataset', 'CropToValidRegion', 'ENDONUKE_CLASSES',
    'DSB_PARTIAL_TILES'
]

#: EndoNuke classes in the order of the source class ids 0, 1, 2
ENDONUKE_CLASSES = ('stroma', 'epithelium', 'other')
#: DSB2018 H&E tiles that are only partly annotated (some visible nuclei have no mask)
DSB_PARTIAL_TILES = ('8f27ebc74164', )


def read_split_ids(path: str, split: Optional[str], available: Optional[Sequence[str]] = None
                   ) -> List[str]:
    """Tile ids of ``split`` in the JSON split file ``path``.

    Args:
        path: JSON object ``{split name: [tile ids], ...}``; other keys whose values are not
            lists (``"scheme"``, ``"notes"``) are ignored.
        split: the split name, or ``None`` for the union of all list-valued keys (file order).
        available: when given, every listed id must be in it.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: not JSON / not an object, unknown split, an id listed twice, or (with
            ``available``) ids that are not on disk; the message names the file and the ids.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'split file {path!r} does not exist; write it with '
                                'tools/dataset_converters/make_real_splits.py')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'could not parse split file {path} as JSON ({e.msg}, line {e.lineno})'
                         ) from None
    if not isinstance(data, dict):
        raise ValueError(f'split file {path}: expected a JSON object {{"train": [ids], ...}}')
    lists = {k: v for k, v in data.items() if isinstance(v, list)}
    if split is None:
        ids = [str(i) for v in lists.values() for i in v]
    else:
        if split not in lists:
            raise ValueError(f'split file {path} has no split {split!r}; it has '
                             f'{sorted(lists)}')
        ids = [str(i) for i in lists[split]]
    seen, dups = set(), []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    if dups:
        raise ValueError(f'split file {path}: tile id(s) listed twice'
                         f'{"" if split is None else f" in {split!r}"}: {sorted(set(dups))}')
    if available is not None:
        have = set(str(a) for a in available)
        missing = [i for i in ids if i not in have]
        if missing:
            raise ValueError(f'split file {path}: {len(missing)} tile(s) of '
                             f'{"all splits" if split is None else repr(split)} are not in the '
                             f'dataset: {missing[:20]}{" ..." if len(missing) > 20 else ""}')
    return ids


def read_dsb_centroids(path: str) -> RawPoints:
    """Read a DSB2018 ``centroids.csv`` (``label,y,x,area_px``) as class-less points.

    Raises:
        ValueError: missing columns or a non-numeric value (naming the file and the line).
    """
    raw = RawPoints(path=path)
    xy = []
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return raw
        names = [h.strip().lower() for h in header]
        if 'x' not in names or 'y' not in names:
            raise ValueError(f'{path}, line 1: expected a header with columns "x" and "y" '
                             f'(DSB2018 centroids: label,y,x,area_px), got {header!r}')
        ix, iy = names.index('x'), names.index('y')
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            where = f'line {reader.line_num}'
            if len(row) != len(names):
                raise ValueError(f'{path}, {where}: expected {len(names)} columns, got {row!r}')
            try:
                xy.append((float(row[ix]), float(row[iy])))
            except ValueError:
                raise ValueError(f'{path}, {where}: could not parse x/y as numbers: {row!r}'
                                 ) from None
            raw.tokens.append(None)
            raw.where.append(where)
    raw.xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return raw


def trailing_black_extent(rgb: np.ndarray) -> Tuple[int, int]:
    """``(h, w)`` of the image without its trailing all-zero rows / columns.

    EndoNuke tiles at the slide edge (741-744) have transparent bottom rows, stored as RGB 0.
    """
    nonzero = np.asarray(rgb).reshape(rgb.shape[0], rgb.shape[1], -1).any(axis=2)
    rows = np.flatnonzero(nonzero.any(axis=1))
    cols = np.flatnonzero(nonzero.any(axis=0))
    if len(rows) == 0:
        return 0, 0
    return int(rows[-1]) + 1, int(cols[-1]) + 1


def _read_manifest(path: str, id_column: str) -> Dict[str, dict]:
    with open(path, newline='', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    if rows and id_column not in rows[0]:
        raise ValueError(f'{path}: expected an id column {id_column!r}, got columns '
                         f'{list(rows[0])}')
    return {r[id_column]: r for r in rows}


class TileFolderPointDataset(PointDataset):
    """Base class: one folder per tile under ``data_root``, tiles chosen by a split file.

    Subclasses set ``IMAGE_NAME``, ``ID_COLUMN``, ``GROUP_COLUMN`` and implement
    :meth:`read_tile_points`.

    Args:
        data_root: folder holding ``manifest.csv`` and the tile folders.
        split_file: JSON split file (see :func:`read_split_ids`); ``None`` uses every tile.
        split: split name in ``split_file``; ``None`` = every tile listed in the file.
        sparse_ratio: freeze a sparse subset (fraction of points annotated) at construction;
            ``None`` keeps every point annotated (or the file's flags).
        sparse_seed: seed of the subset (independent of the training seed).
        sparse_mode: ``'fixed_count'`` (default: exactly ``round(ratio * N)`` per tile),
            ``'bernoulli'`` or ``'exp_threshold'``.
        keep_first_per_class: always annotate the first point of every source class present.
        extra_annotated: optional JSON file ``{tile id: [point indices]}`` (indices in the tile's
            point-file order) of points annotated *in addition* to the sparse subset, e.g. the
            clicks suggested by ``tools/analysis_tools/suggest_clicks.py``. Needs
            ``sparse_ratio``; an unknown tile or an index out of range is an error.
        **kwargs: :class:`PointDataset` arguments (``metainfo``, ``class_map``, ``pipeline``,
            ``test_mode``, ...).
    """

    IMAGE_NAME = 'image.png'
    ID_COLUMN = 'id'
    GROUP_COLUMN: Optional[str] = None
    SOURCE_CLASSES: Tuple[str, ...] = ()

    def __init__(self,
                 data_root: str = '',
                 split_file: Optional[str] = None,
                 split: Optional[str] = 'train',
                 sparse_ratio: Optional[float] = None,
                 sparse_seed: int = 0,
                 sparse_mode: str = 'fixed_count',
                 keep_first_per_class: bool = True,
                 extra_annotated: Optional[str] = None,
                 **kwargs) -> None:
        if extra_annotated is not None and sparse_ratio is None:
            raise ValueError('extra_annotated needs sparse_ratio (it adds to the sparse subset)')
        self.extra_annotated = extra_annotated
        if sparse_ratio is not None and not 0 < float(sparse_ratio) <= 1:
            raise ValueError(f'sparse_ratio must be in (0, 1] or None, got {sparse_ratio!r}')
        if sparse_mode not in MODES:
            raise ValueError(f'sparse_mode must be one of {MODES}, got {sparse_mode!r}')
        self.split_file = split_file
        self.split = split
        self.sparse_ratio = None if sparse_ratio is None else float(sparse_ratio)
        self.sparse_seed = int(sparse_seed)
        self.sparse_mode = sparse_mode
        self.keep_first_per_class = keep_first_per_class
        kwargs.setdefault('data_prefix', dict(img='', ann=''))
        kwargs.setdefault('ann_format', 'csv')
        kwargs.setdefault('class_id_base', 0)
        super().__init__(data_root=data_root, **kwargs)

    # ------------------------------------------------------------------ subclass interface
    def read_tile_points(self, tile_dir: str) -> RawPoints:
        raise NotImplementedError

    def _layout_hint(self) -> str:
        return ('Expected the tile-folder layout:\n'
                '  <data_root>/manifest.csv\n'
                f'  <data_root>/<id>/{self.IMAGE_NAME} + the point file\n'
                'See docs/datasets.md ("Real expert annotations").')

    # --------------------------------------------------------------------------- loading
    def _tile_ids(self) -> Tuple[List[str], Dict[str, dict]]:
        root = self.data_root
        manifest_path = osp.join(root, 'manifest.csv')
        manifest: Dict[str, dict] = {}
        if osp.isfile(manifest_path):
            manifest = _read_manifest(manifest_path, self.ID_COLUMN)
            on_disk = [t for t in manifest if osp.isdir(osp.join(root, t))]
            gone = [t for t in manifest if t not in on_disk]
            if gone:
                raise FileNotFoundError(
                    f'{type(self).__name__}: {manifest_path} lists {len(gone)} tile(s) without a '
                    f'folder: {gone[:10]}')
        else:
            on_disk = sorted(d for d in os.listdir(root)
                             if osp.isfile(osp.join(root, d, self.IMAGE_NAME)))
        if self.split_file is None:
            ids = sorted(on_disk, key=lambda s: (len(s), s))
        else:
            ids = read_split_ids(self.split_file, self.split, available=on_disk)
        return ids, manifest

    def load_data_list(self) -> List[dict]:
        from .annotation_io import ClassResolver
        from collections import Counter
        if not self.data_root or not osp.isdir(self.data_root):
            raise FileNotFoundError(f'{type(self).__name__}: data_root {self.data_root!r} does '
                                    f'not exist.\n{self._layout_hint()}')
        self._resolver = ClassResolver(self._classes(), self.class_map, self.class_id_base)
        self._dropped_by_map = Counter()
        source = ClassResolver(self.SOURCE_CLASSES, None, 0) if self.SOURCE_CLASSES else None
        ids, manifest = self._tile_ids()
        extra: Dict[str, List[int]] = {}
        if self.extra_annotated is not None:
            with open(self.extra_annotated, encoding='utf-8') as f:
                extra = {str(k): [int(i) for i in v] for k, v in json.load(f).items()}
            unknown = sorted(set(extra) - set(ids))
            if unknown:
                raise ValueError(f'{self.extra_annotated}: tiles {unknown[:10]} are not in this '
                                 f'split of {type(self).__name__}')
        data_list = []
        for tile in ids:
            tile_dir = osp.join(self.data_root, tile)
            img_path = osp.join(tile_dir, self.IMAGE_NAME)
            if not osp.isfile(img_path):
                raise FileNotFoundError(f'{type(self).__name__}: tile {tile!r} has no image '
                                        f'{img_path!r}.\n{self._layout_hint()}')
            raw = self.read_tile_points(tile_dir)
            if self.sparse_ratio is not None:
                src_labels = np.zeros(len(raw), np.int64)
                if source is not None:
                    for i, tok in enumerate(raw.tokens):
                        try:
                            src_labels[i] = source.resolve(tok)
                        except KeyError as e:
                            raise ValueError(f'{raw.path}, {raw.where[i]}: {e.args[0]}') from None
                raw.annotated = sample_sparse_subset(
                    src_labels, self.sparse_ratio, sparse_rng(self.sparse_seed, tile),
                    self.sparse_mode, self.keep_first_per_class)
                for i in extra.get(tile, []):
                    if not 0 <= i < len(raw):
                        raise ValueError(f'{self.extra_annotated}: tile {tile!r} has no point '
                                         f'index {i} ({len(raw)} points in {raw.path})')
                    raw.annotated[i] = True
            row = manifest.get(tile, {})
            width = int(row['width']) if row.get('width') else None
            height = int(row['height']) if row.get('height') else None
            info = self._build_info(img_path, tile, raw, raw.path, width, height)
            info['sparse_frozen'] = raw.annotated is not None
            valid = self._valid_hw(img_path, row)
            if valid is not None:
                info['valid_hw'] = valid
            if self.GROUP_COLUMN and row.get(self.GROUP_COLUMN):
                info['tile_group'] = row[self.GROUP_COLUMN]
            data_list.append(info)
        n_points = sum(len(d['gt_points_labels']) for d in data_list)
        n_ann = sum(int(d['gt_points_annotated'].sum()) for d in data_list)
        sparse = ('' if self.sparse_ratio is None else
                  f' (sparse_ratio={self.sparse_ratio:g}, seed={self.sparse_seed})')
        print_log(
            f'{type(self).__name__}: {len(data_list)} tiles'
            f'{"" if self.split is None else f" ({self.split})"}, {n_points} points, '
            f'{n_ann} annotated{sparse}', logger='current')
        if self._dropped_by_map:
            print_log(f'{type(self).__name__}: dropped {sum(self._dropped_by_map.values())} '
                      f'points by class_map: {dict(self._dropped_by_map)}', logger='current')
        return data_list

    def _valid_hw(self, img_path: str, row: dict) -> Optional[Tuple[int, int]]:
        return None


@DATASETS.register_module()
class EndoNukePointDataset(TileFolderPointDataset):
    """EndoNuke IHC tiles with expert points of three classes (CC BY 4.0, Naumov et al. 2022).

    ``<data_root>/<stem>/image.png`` + ``points.csv`` (``x,y,class`` with class ``stroma``,
    ``epithelium`` or ``other``; the integer ids 0/1/2 of the source label files are accepted too).
    ``manifest.csv`` (optional) gives ``id_block`` (acquisition batch, stored as ``tile_group``)
    and ``transparent_px``: tiles with transparent (black) trailing rows get ``valid_hw`` and
    :class:`CropToValidRegion` removes those rows from losses and metrics.

    For a single-class (SEL) view use ``metainfo=dict(classes=('nucleus',))`` and
    ``class_map={'stroma': 'nucleus', 'epithelium': 'nucleus', 'other': 'nucleus'}``.
    """

    METAINFO: dict = dict(classes=ENDONUKE_CLASSES,
                          palette=[(0, 114, 178), (230, 159, 0), (204, 121, 167)])
    ID_COLUMN = 'stem'
    GROUP_COLUMN = 'id_block'
    SOURCE_CLASSES = ENDONUKE_CLASSES

    def read_tile_points(self, tile_dir: str) -> RawPoints:
        path = osp.join(tile_dir, 'points.csv')
        if not osp.isfile(path):
            raise FileNotFoundError(f'{type(self).__name__}: {path!r} is missing (every tile '
                                    f'needs points.csv, x,y,class).\n{self._layout_hint()}')
        return read_csv_points(path)

    def _layout_hint(self) -> str:
        return ('Expected the EndoNuke tile-folder layout:\n'
                '  <data_root>/manifest.csv          (stem,height,width,id_block,...)\n'
                '  <data_root>/<stem>/image.png\n'
                '  <data_root>/<stem>/points.csv     x,y,class (stroma/epithelium/other)\n'
                'Convert the published layout (images/<id>.png + labels/<id>.txt) with\n'
                '  python tools/dataset_converters/endonuke_to_points.py SRC OUT\n'
                'See docs/datasets.md ("Real expert annotations").')

    def _valid_hw(self, img_path: str, row: dict) -> Optional[Tuple[int, int]]:
        transparent = row.get('transparent_px')
        if transparent in (None, '') or int(float(transparent)) <= 0:
            return None
        from PIL import Image
        with Image.open(img_path) as im:
            rgb = np.asarray(im.convert('RGB'))
        return trailing_black_extent(rgb)


@DATASETS.register_module()
class DSB2018PointDataset(TileFolderPointDataset):
    """DSB2018 (BBBC038v1, CC0) brightfield H&E-type tiles; points = expert mask centroids.

    ``<data_root>/<id12>/image.png`` + ``centroids.csv`` (``label,y,x,area_px``) +
    ``labels.png``. One class, ``nucleus``. ``manifest.csv`` may carry a ``group`` column
    (appearance group, stored as ``tile_group``). Tile ``8f27ebc74164`` is only partly annotated:
    its data info has ``partial_annotation=True``; the split files keep it out of val/test (it is
    a training tile, where unannotated nuclei are what sparse training expects anyway, and only
    recall is reported on training tiles).
    """

    METAINFO: dict = dict(classes=('nucleus', ), palette=[(0, 114, 178)])
    ID_COLUMN = 'id12'
    GROUP_COLUMN = 'group'

    def read_tile_points(self, tile_dir: str) -> RawPoints:
        path = osp.join(tile_dir, 'centroids.csv')
        if not osp.isfile(path):
            raise FileNotFoundError(f'{type(self).__name__}: {path!r} is missing.\n'
                                    f'{self._layout_hint()}')
        return read_dsb_centroids(path)

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        for info in data_list:
            info['partial_annotation'] = info['img_id'] in DSB_PARTIAL_TILES
        partial = [d['img_id'] for d in data_list if d['partial_annotation']]
        if partial and self.test_mode:
            print_log(f'{type(self).__name__}: tile(s) {partial} are only partly annotated: '
                      'their precision is meaningless (unannotated nuclei count as false '
                      'positives); use them for recall only', logger='current',
                      level=logging.WARNING)
        return data_list

    def _layout_hint(self) -> str:
        return ('Expected the DSB2018 tile-folder layout:\n'
                '  <data_root>/manifest.csv          (id12,...,group)\n'
                '  <data_root>/<id12>/image.png, labels.png (uint16), centroids.csv '
                '(label,y,x,area_px)\n'
                'Convert the published stage1_train layout (<id>/images/<id>.png + '
                '<id>/masks/*.png) with\n'
                '  python tools/dataset_converters/dsb2018_to_points.py SRC OUT\n'
                'See docs/datasets.md ("Real expert annotations").')


@TRANSFORMS.register_module()
class CropToValidRegion(BaseTransform):
    """Crop the image (and points) to ``results['valid_hw']`` from the top-left corner.

    Put it right after ``LoadHistologyImage``. Samples without ``valid_hw`` pass unchanged. The
    cropped size becomes both ``img_shape`` and ``ori_shape`` (predictions are then in the
    cropped frame, which has the same origin as the original image).
    """

    def transform(self, results: dict) -> dict:
        valid = results.get('valid_hw')
        if valid is None:
            return results
        h, w = int(valid[0]), int(valid[1])
        img = results['img']
        if h <= 0 or w <= 0:
            raise ValueError(f'CropToValidRegion: empty valid region {valid} for '
                             f'{results.get("img_path")!r}')
        if (h, w) == tuple(img.shape[:2]):
            return results
        results['img'] = np.ascontiguousarray(img[:h, :w])
        results['img_shape'] = (h, w)
        results['ori_shape'] = (h, w)
        points = results.get('gt_points')
        if points is not None and len(points):
            from protocal.structures import points_inside
            keep = points_inside(np.asarray(points, np.float32), (h, w))
            if not keep.all():
                print_log(f'CropToValidRegion: {int((~keep).sum())} point(s) of '
                          f'{results.get("img_path")!r} lie in the invalid region and are '
                          'dropped', logger='current', level=logging.WARNING)
            results['gt_points'] = np.asarray(points)[keep]
            for key in ('gt_points_labels', 'gt_points_annotated'):
                if results.get(key) is not None:
                    results[key] = np.asarray(results[key])[keep]
        return results
