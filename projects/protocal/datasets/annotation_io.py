"""Readers and writers for point annotations (CSV, QuPath GeoJSON, COCO-style JSON).

The readers only parse files; they know nothing about the dataset's classes. Each returns
:class:`RawPoints` with the coordinates as written in the file and the raw class *token* of every
point (a string such as ``'2'`` or ``'Tumor'``, or ``None`` when the file gives no class). Mapping
tokens to class indices, dropping bad points and logging is done by
:class:`~protocal.datasets.ClassResolver` and :class:`~protocal.datasets.PointDataset`.

Every parse error is a :class:`ValueError` that names the file and the row / feature / annotation
and says what was expected, so that a broken file is found before training starts.

Supported layouts (see ``docs/datasets.md`` for examples):

* **CSV**, one point per row, comma separated. Either no header and the columns ``x,y[,class]``
  (the OCELOT 2023 cell format: ``x,y,label`` with label 1 = BC, 2 = TC), or a header row naming the
  columns: ``x``, ``y``, an optional class column (``class``, ``label``, ``class_id``, ``cls``,
  ``category`` or ``name``) and an optional ``annotated`` column (1/0, true/false, yes/no).
  Blank lines and lines starting with ``#`` are ignored.
* **GeoJSON** as exported by QuPath: a ``FeatureCollection``, a list of features or one feature.
  ``Point`` and ``MultiPoint`` geometries are read; other geometries are skipped and counted. The
  class comes from ``properties.classification.name`` (or ``properties.classification`` when it is
  a string), else ``properties.class``, ``properties.label`` or ``properties.name``. An optional
  boolean ``properties.annotated`` marks the sparse subset.
* **COCO-style JSON** with ``images`` (``id``, ``file_name``, optional ``width``/``height``),
  ``categories`` (``id``, ``name``) and ``annotations`` (``image_id``, ``category_id`` and one of
  ``point: [x, y]``, ``keypoints: [x, y, v, ...]`` (first keypoint; ``v == 0`` means "not labelled"
  and is skipped) or ``bbox: [x, y, w, h]`` (its centre)). An optional ``annotated`` boolean per
  annotation marks the sparse subset.
"""
import csv
import io
import json
import math
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    'RawPoints', 'CocoImage', 'ClassResolver', 'normalize_class_token', 'parse_bool',
    'read_csv_points', 'read_geojson_points', 'read_coco_points', 'read_points', 'write_csv_points',
    'ANN_SUFFIXES', 'CLASS_COLUMNS'
]

#: annotation file suffixes recognised for per-image formats
ANN_SUFFIXES = {'csv': ('.csv', ), 'geojson': ('.geojson', '.json')}
#: header names accepted for the class column of a CSV file (case-insensitive)
CLASS_COLUMNS = ('class', 'label', 'class_id', 'cls', 'category', 'name')
_TRUE = {'1', 'true', 't', 'yes', 'y'}
_FALSE = {'0', 'false', 'f', 'no', 'n'}


@dataclass
class RawPoints:
    """Points of one image as written in an annotation file.

    Attributes:
        path: the file the points come from (used in messages).
        xy: float64 ``(N, 2)`` array of ``(x, y)`` = (column, row) in pixels; may contain NaN.
        tokens: raw class token of each point (see :func:`normalize_class_token`), ``None`` when
            the file has no class for it.
        where: human-readable location of each point in the file (``'line 3'``, ``'feature 2'``),
            used by error messages.
        annotated: bool ``(N,)`` sparse-subset flags when the file stores them, else ``None``.
        skipped: number of entries that are not points, by reason (e.g. ``'Polygon geometry'``).
        alt_tokens: optional second token per point, tried when ``tokens`` is not known (COCO:
            the ``category_id`` next to the category name).
    """
    path: str
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    tokens: List[Optional[str]] = field(default_factory=list)
    where: List[str] = field(default_factory=list)
    annotated: Optional[np.ndarray] = None
    skipped: Dict[str, int] = field(default_factory=dict)
    alt_tokens: Optional[List[Optional[str]]] = None

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class CocoImage:
    """One entry of a COCO ``images`` list."""
    id: Any
    file_name: str
    width: Optional[int] = None
    height: Optional[int] = None


def normalize_class_token(value: Any) -> Optional[str]:
    """Canonical string form of a class id or name found in a file or in a ``class_map`` key.

    ``2``, ``2.0``, ``'2'`` and ``' 2.0 '`` all become ``'2'``; names are stripped of surrounding
    white space; ``None`` and empty strings become ``None`` ("no class given").
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return str(value)
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return text


def parse_bool(value: Any) -> bool:
    """Parse an ``annotated`` flag (bool, 0/1, or one of true/false/yes/no/t/f/y/n)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, (float, np.floating)) and value in (0.0, 1.0):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text == '1.0':
        return True
    if text in _FALSE or text == '0.0':
        return False
    raise ValueError(f'expected a boolean (1/0, true/false, yes/no), got {value!r}')


# ----------------------------------------------------------------------------------------- CSV
def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_float(text: str, path: str, where: str, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f'{path}, {where}: could not parse {column}={text!r} as a number; '
                         'expected rows "x,y[,class]" with numeric x and y') from None


def read_csv_points(path: str) -> RawPoints:
    """Read a points CSV (see the module docstring for the accepted layouts).

    Raises:
        ValueError: a row has the wrong number of columns, a non-numeric coordinate, an invalid
            ``annotated`` value, or the header lacks ``x``/``y``.
    """
    with open(path, newline='', encoding='utf-8-sig') as f:
        text = f.read()
    raw = RawPoints(path=path)
    xs: List[Tuple[float, float]] = []
    flags: List[bool] = []
    col_x, col_y, col_cls, col_ann = 0, 1, 2, None
    n_cols: Optional[int] = None
    header_seen = False
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        where = f'line {reader.line_num}'
        cells = [c.strip() for c in row]
        if not cells or all(not c for c in cells) or cells[0].startswith('#'):
            continue
        if not header_seen and n_cols is None and not _is_number(cells[0]):
            # header row
            names = [c.lower() for c in cells]
            if 'x' not in names or 'y' not in names:
                raise ValueError(
                    f'{path}, {where}: could not parse the header {row!r}; expected a header with '
                    f'columns "x" and "y" (optional: one of {"/".join(CLASS_COLUMNS)}, "annotated")'
                    ' or headerless rows "x,y[,class]"')
            col_x, col_y = names.index('x'), names.index('y')
            col_cls = next((names.index(c) for c in CLASS_COLUMNS if c in names), None)
            col_ann = names.index('annotated') if 'annotated' in names else None
            n_cols = len(cells)
            header_seen = True
            continue
        if n_cols is None:  # headerless: x,y or x,y,class
            if len(cells) not in (2, 3):
                raise ValueError(
                    f'{path}, {where}: expected 2 or 3 comma-separated columns "x,y[,class]" '
                    f'(or a header row), got {len(cells)}: {row!r}')
            n_cols = len(cells)
            col_cls = 2 if n_cols == 3 else None
        if len(cells) != n_cols:
            raise ValueError(f'{path}, {where}: expected {n_cols} columns like the first row, '
                             f'got {len(cells)}: {row!r}')
        x = _parse_float(cells[col_x], path, where, 'x')
        y = _parse_float(cells[col_y], path, where, 'y')
        xs.append((x, y))
        raw.tokens.append(normalize_class_token(cells[col_cls]) if col_cls is not None else None)
        raw.where.append(where)
        if col_ann is not None:
            try:
                flags.append(parse_bool(cells[col_ann]))
            except ValueError as e:
                raise ValueError(f'{path}, {where}: column "annotated": {e}') from None
    raw.xy = np.asarray(xs, dtype=np.float64).reshape(-1, 2)
    if col_ann is not None:
        raw.annotated = np.asarray(flags, dtype=bool)
    return raw


# ------------------------------------------------------------------------------------- GeoJSON
def _load_json(path: str, expected: str) -> Any:
    with open(path, encoding='utf-8-sig') as f:
        text = f.read()
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f'could not parse {path} as JSON ({e.msg} at line {e.lineno}, column '
                         f'{e.colno}); expected {expected}') from None


def _feature_class(props: Dict[str, Any]) -> Any:
    cls = props.get('classification')
    if isinstance(cls, dict):
        if cls.get('name') is not None:
            return cls['name']
    elif cls is not None:
        return cls
    for key in ('class', 'label', 'name'):
        if props.get(key) is not None:
            return props[key]
    return None


def _coords_xy(coords: Any, path: str, where: str) -> Tuple[float, float]:
    if (not isinstance(coords, (list, tuple)) or len(coords) < 2
            or not all(isinstance(c, (int, float)) or c is None for c in coords[:2])):
        raise ValueError(f'{path}, {where}: expected point coordinates [x, y], got {coords!r}')
    return tuple(float('nan') if c is None else float(c) for c in coords[:2])


def read_geojson_points(path: str, pixel_offset: float = 0.5) -> RawPoints:
    """Read points from a (QuPath) GeoJSON file; see the module docstring.

    QuPath measures coordinates from the top-left *corner* of the image, so the centre of pixel
    ``(c, r)`` is ``(c + 0.5, r + 0.5)``; protocal puts pixel centres on integers
    (``docs/architecture.md``). ``pixel_offset`` (0.5) is subtracted from both coordinates, the
    inverse of :func:`protocal.apis.write_qupath_geojson`, so export -> import is lossless.

    An empty file, ``[]`` or a collection without features gives zero points.

    Raises:
        ValueError: the file is not JSON, not a feature / feature list / FeatureCollection, or a
            point has malformed coordinates.
    """
    expected = 'a GeoJSON FeatureCollection, a list of features or a single Feature'
    data = _load_json(path, expected)
    raw = RawPoints(path=path)
    if data is None:
        return raw
    if isinstance(data, dict) and data.get('type') == 'FeatureCollection':
        features = data.get('features') or []
    elif isinstance(data, dict) and data.get('type') == 'Feature':
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise ValueError(f'could not parse {path}: expected {expected}, got a JSON '
                         f'{type(data).__name__}' +
                         (f' of type {data.get("type")!r}' if isinstance(data, dict) else ''))
    xy: List[Tuple[float, float]] = []
    flags: List[Optional[bool]] = []
    for i, feat in enumerate(features):
        where = f'feature {i}'
        if not isinstance(feat, dict) or not isinstance(feat.get('geometry'), dict):
            raise ValueError(f'{path}, {where}: expected a GeoJSON Feature with a "geometry" '
                             f'object, got {str(feat)[:80]!r}')
        geom = feat['geometry']
        gtype = geom.get('type')
        props = feat.get('properties') or {}
        if gtype == 'Point':
            coords_list = [geom.get('coordinates')]
        elif gtype == 'MultiPoint':
            coords_list = geom.get('coordinates') or []
        else:
            key = f'{gtype} geometry'
            raw.skipped[key] = raw.skipped.get(key, 0) + 1
            continue
        token = normalize_class_token(_feature_class(props))
        flag = None
        if 'annotated' in props:
            try:
                flag = parse_bool(props['annotated'])
            except ValueError as e:
                raise ValueError(f'{path}, {where}: property "annotated": {e}') from None
        for j, coords in enumerate(coords_list):
            sub = where if gtype == 'Point' else f'{where} point {j}'
            xy.append(_coords_xy(coords, path, sub))
            raw.tokens.append(token)
            raw.where.append(sub)
            flags.append(flag)
    raw.xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2) - pixel_offset
    if any(f is not None for f in flags):
        # features without the property count as annotated
        raw.annotated = np.asarray([True if f is None else f for f in flags], dtype=bool)
    return raw


# ---------------------------------------------------------------------------------------- COCO
def _coco_point(ann: Dict[str, Any], path: str, where: str) -> Optional[Tuple[float, float]]:
    """(x, y) of a COCO annotation, or None when its keypoint is marked "not labelled"."""
    if ann.get('point') is not None:
        return _coords_xy(ann['point'], path, where)
    if ann.get('keypoints'):
        kp = ann['keypoints']
        if len(kp) >= 3 and kp[2] == 0:
            return None
        return _coords_xy(kp[:2], path, where)
    if ann.get('bbox') is not None:
        bbox = ann['bbox']
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ValueError(f'{path}, {where}: expected "bbox": [x, y, w, h], got {bbox!r}')
        x, y, w, h = (float(v) for v in bbox)
        return x + w / 2.0, y + h / 2.0
    raise ValueError(f'{path}, {where}: expected one of "point": [x, y], "keypoints": '
                     '[x, y, v, ...] or "bbox": [x, y, w, h]')


def read_coco_points(path: str) -> Tuple[List[CocoImage], Dict[Any, RawPoints]]:
    """Read a COCO-style point file.

    Returns:
        The images in file order and a dict ``image id -> RawPoints`` with one entry per image
        (images without annotations get zero points). Class tokens are the category *names*; the
        category ids are kept in ``RawPoints.alt_tokens`` so that a ``class_map`` may use either.
        Keypoints with visibility 0 are counted in ``skipped['unlabelled keypoint']``.

    Raises:
        ValueError: not JSON, missing ``images``/``annotations``, unknown ``image_id`` or
            ``category_id``, malformed coordinates.
    """
    expected = ('a COCO-style JSON object with "images" (id, file_name), "categories" (id, name) '
                'and "annotations" (image_id, category_id, point/keypoints/bbox)')
    data = _load_json(path, expected)
    if not isinstance(data, dict) or not isinstance(data.get('images'), list):
        raise ValueError(f'could not parse {path}: expected {expected}')
    images: List[CocoImage] = []
    per_image: Dict[Any, RawPoints] = {}
    for i, img in enumerate(data['images']):
        if not isinstance(img, dict) or 'id' not in img or 'file_name' not in img:
            raise ValueError(f'{path}, images[{i}]: expected an object with "id" and "file_name"')
        if img['id'] in per_image:
            raise ValueError(f'{path}, images[{i}]: duplicate image id {img["id"]!r}')
        images.append(
            CocoImage(img['id'], str(img['file_name']), img.get('width'), img.get('height')))
        per_image[img['id']] = RawPoints(path=path, alt_tokens=[])
    categories = {}
    for i, cat in enumerate(data.get('categories') or []):
        if not isinstance(cat, dict) or 'id' not in cat:
            raise ValueError(f'{path}, categories[{i}]: expected an object with "id" and "name"')
        categories[cat['id']] = cat.get('name', cat['id'])
    points: Dict[Any, List[Tuple[float, float]]] = {k: [] for k in per_image}
    flags: Dict[Any, List[Optional[bool]]] = {k: [] for k in per_image}
    anns = data.get('annotations') or []
    if not isinstance(anns, list):
        raise ValueError(
            f'could not parse {path}: "annotations" must be a list; expected {expected}')
    for i, ann in enumerate(anns):
        where = f'annotations[{i}]' + (f' (id {ann["id"]})'
                                       if isinstance(ann, dict) and 'id' in ann else '')
        if not isinstance(ann, dict):
            raise ValueError(f'{path}, {where}: expected an object')
        if ann.get('image_id') not in per_image:
            raise ValueError(f'{path}, {where}: image_id {ann.get("image_id")!r} is not in '
                             '"images"')
        raw = per_image[ann['image_id']]
        xy = _coco_point(ann, path, where)
        if xy is None:
            raw.skipped['unlabelled keypoint'] = raw.skipped.get('unlabelled keypoint', 0) + 1
            continue
        cat_id = ann.get('category_id')
        if cat_id is None:
            token = None
        elif categories and cat_id not in categories:
            raise ValueError(f'{path}, {where}: category_id {cat_id!r} is not in "categories"')
        else:
            token = normalize_class_token(categories.get(cat_id, cat_id))
        flag = None
        if 'annotated' in ann:
            try:
                flag = parse_bool(ann['annotated'])
            except ValueError as e:
                raise ValueError(f'{path}, {where}: "annotated": {e}') from None
        points[ann['image_id']].append(xy)
        raw.tokens.append(token)
        raw.alt_tokens.append(normalize_class_token(cat_id))
        raw.where.append(where)
        flags[ann['image_id']].append(flag)
    for img_id, raw in per_image.items():
        raw.xy = np.asarray(points[img_id], dtype=np.float64).reshape(-1, 2)
        if any(f is not None for f in flags[img_id]):
            raw.annotated = np.asarray([True if f is None else f for f in flags[img_id]], bool)
    return images, per_image


def read_points(path: str, fmt: str = 'auto') -> RawPoints:
    """Read a per-image annotation file in ``fmt`` (``'csv'``, ``'geojson'`` or ``'auto'``)."""
    if fmt == 'auto':
        fmt = 'csv' if path.lower().endswith('.csv') else 'geojson'
    if fmt == 'csv':
        return read_csv_points(path)
    if fmt == 'geojson':
        return read_geojson_points(path)
    raise ValueError(f'unknown per-image annotation format {fmt!r}; expected "csv" or "geojson"')


# ------------------------------------------------------------------------------------- classes
class ClassResolver:
    """Map class tokens found in annotation files to 0-based class indices.

    A token is resolved in this order:

    1. ``class_map[token]`` if the token is a key of ``class_map``: a class name of ``classes``, or
       ``None`` to drop the point (returned as ``-1``);
    2. the index of the token in ``classes`` when it is a class name;
    3. ``int(token) - class_id_base`` when the token is an integer in range (with the default
       ``class_id_base=1``, id 1 is the first class: the convention of OCELOT and of the reference
       heatmaps, whose channel ``c`` holds class ``c - 1`` of ours).

    Points without a class (``token is None``) use ``class_map[None]`` if given, else the only
    class of a single-class dataset.

    Args:
        classes: class names of the dataset (``metainfo['classes']``).
        class_map: optional mapping from ids / names used in the files to class names or ``None``.
            Keys are normalised with :func:`normalize_class_token`, so ``2``, ``2.0`` and ``'2'``
            are the same key.
        class_id_base: the integer id of ``classes[0]`` in the files (``None`` disables integer
            ids, so only names and ``class_map`` keys are accepted).

    Raises:
        ValueError: a ``class_map`` value is neither ``None`` nor one of ``classes``.
    """

    DROP = -1

    def __init__(self,
                 classes: Sequence[str],
                 class_map: Optional[Dict[Any, Optional[str]]] = None,
                 class_id_base: Optional[int] = 1) -> None:
        self.classes = tuple(classes)
        self.class_id_base = class_id_base
        self.class_map: Dict[Optional[str], int] = {}
        for key, value in (class_map or {}).items():
            if value is not None and value not in self.classes:
                raise ValueError(f'class_map entry {key!r}: {value!r} is not one of the dataset '
                                 f'classes {self.classes} (use None to drop those points)')
            norm = normalize_class_token(key)
            self.class_map[norm] = self.DROP if value is None else self.classes.index(value)

    def resolve(self, token: Optional[str], alt_token: Optional[str] = None) -> int:
        """0-based class index of ``token`` (``-1``: drop the point).

        Raises:
            KeyError: the token is unknown; the message lists what would have been accepted.
        """
        for tok in ((token, ) if alt_token is None else (token, alt_token)):
            if tok in self.class_map:
                return self.class_map[tok]
        if token is None:
            if len(self.classes) == 1:
                return 0
            raise KeyError('the point has no class; add a class column / property, or map '
                           'class-less points with class_map={None: <class name>}')
        for tok in ((token, ) if alt_token is None else (token, alt_token)):
            if tok in self.classes:
                return self.classes.index(tok)
        if self.class_id_base is not None:
            for tok in ((token, ) if alt_token is None else (token, alt_token)):
                if tok is not None and tok.lstrip('-').isdigit():
                    idx = int(tok) - self.class_id_base
                    if 0 <= idx < len(self.classes):
                        return idx
        hint = f'class names {list(self.classes)}'
        if self.class_id_base is not None:
            hint += (f', integer ids {self.class_id_base}..'
                     f'{self.class_id_base + len(self.classes) - 1} (class_id_base='
                     f'{self.class_id_base})')
        if self.class_map:
            hint += f', class_map keys {[k for k in self.class_map]}'
        raise KeyError(f'unknown class {token!r}; expected {hint}')


# -------------------------------------------------------------------------------------- writer
def write_csv_points(path: str,
                     points: np.ndarray,
                     classes: Sequence[Union[str, int]],
                     annotated: Optional[Iterable[bool]] = None,
                     header: bool = True,
                     decimals: Optional[int] = None) -> None:
    """Write points as CSV ``x,y,class[,annotated]`` (the layout :func:`read_csv_points` reads).

    Args:
        path: output file; parent folders are created.
        points: ``(N, 2)`` array of ``(x, y)``.
        classes: class name or id of every point.
        annotated: optional sparse-subset flags, written as an ``annotated`` column of 1/0.
        header: write the header row ``x,y,class[,annotated]``.
        decimals: round coordinates to this many decimals (``None``: the shortest repr that reads
            back to the same value of the array's dtype, float32 or float64; integer-valued
            coordinates are written without a decimal point).
    """
    points = np.asarray(points)
    if points.dtype != np.float32:  # float32 input is written with float32's shortest repr
        points = points.astype(np.float64)
    points = points.reshape(-1, 2)
    classes = list(classes)
    if len(classes) != len(points):
        raise ValueError(f'{len(points)} points but {len(classes)} classes')
    flags = None if annotated is None else [bool(a) for a in annotated]
    if flags is not None and len(flags) != len(points):
        raise ValueError(f'{len(points)} points but {len(flags)} annotated flags')

    def fmt(v: np.floating) -> str:
        if decimals is not None:
            v = v.dtype.type(round(float(v), decimals))
        return np.format_float_positional(v, unique=True, trim='-')

    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f, lineterminator='\n')
        if header:
            writer.writerow(['x', 'y', 'class'] + ([] if flags is None else ['annotated']))
        for i, (x, y) in enumerate(points):
            row = [fmt(x), fmt(y), classes[i]]
            if flags is not None:
                row.append(int(flags[i]))
            writer.writerow(row)
