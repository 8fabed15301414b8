"""Write point detections as CSV or as QuPath-importable GeoJSON (atomically).

Both writers take the points in protocal's convention (``(x, y)`` pixels of the image, the centre
of pixel ``(col, row)`` at ``(col, row)``), 0-based labels and optional scores. A file is written
to a temporary file in the destination folder and moved into place with :func:`os.replace`, so a
reader never sees a half-written file and an interrupted run leaves no partial output.

QuPath (File > Import objects from file, or drag and drop; QuPath 0.3 and later) reads a GeoJSON
``FeatureCollection`` whose features carry QuPath's properties:

* ``objectType``: ``'annotation'`` (editable) or ``'detection'`` (lighter, for many cells);
* ``classification``: ``{'name': ..., 'color': [r, g, b]}`` (QuPath 0.4+ reads the colour; 0.3
  reads the name and takes the colour from its own class list);
* ``measurements``: ``[{'name': 'score', 'value': ...}]``, the list form that QuPath 0.3 writes
  and every later version still reads.

QuPath puts the image origin at the top-left *corner* of the top-left pixel, so the centre of pixel
``(col, row)`` is ``(col + 0.5, row + 0.5)`` there; the GeoJSON writer adds ``pixel_offset=0.5``
by default (a reader of such files should subtract it again).
"""
import csv
import io
import json
import math
import os
import os.path as osp
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from protocal.utils import atomic_write, to_numpy

__all__ = ['write_points_csv', 'write_qupath_geojson', 'atomic_write_text']

PathLike = Union[str, Path]
CSV_COLUMNS = ('x', 'y', 'class', 'class_name', 'score')
QUPATH_OBJECT_TYPES = ('annotation', 'detection')


def atomic_write_text(path: PathLike, text: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder + ``os.replace``
    (:func:`protocal.utils.atomic_write`): on any error the previous content of ``path`` (if any)
    is left untouched and no temporary file remains. The parent folder is created if needed."""
    with atomic_write(osp.abspath(os.fspath(path)), 'w', encoding=encoding, newline='') as f:
        f.write(text)


def _check(points, labels, scores, classes) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray],
                                                    Sequence[str]]:
    points = np.asarray(to_numpy(points), np.float64)
    if points.size == 0:
        points = points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'points must have shape (N, 2) (x, y), got {points.shape}')
    if not np.isfinite(points).all():
        raise ValueError('points contain NaN or infinite coordinates')
    labels = np.asarray(to_numpy(labels)).reshape(-1)
    if len(labels) != len(points):
        raise ValueError(f'labels has {len(labels)} values for {len(points)} points')
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise ValueError('labels must be integer class indices')
    labels = labels.astype(np.int64)
    if scores is not None:
        scores = np.asarray(to_numpy(scores), np.float64).reshape(-1)
        if len(scores) != len(points):
            raise ValueError(f'scores has {len(scores)} values for {len(points)} points')
        if not np.isfinite(scores).all():
            raise ValueError('scores contain NaN or infinite values')
    if classes is None:
        classes = [f'class_{i}' for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    classes = [str(c) for c in classes]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f'labels must be in [0, {len(classes) - 1}] for classes {classes}, got '
                         f'values in [{labels.min()}, {labels.max()}]')
    return points, labels, scores, classes


def write_points_csv(path: PathLike,
                     points,
                     labels,
                     scores=None,
                     classes: Optional[Sequence[str]] = None,
                     precision: int = 2) -> None:
    """Write one row per point: ``x,y,class,class_name,score`` (with a header row).

    Args:
        path: output ``.csv`` file (parent folders are created).
        points: ``(N, 2)`` (x, y) in pixels.
        labels: ``(N,)`` 0-based class indices (the ``class`` column).
        scores: ``(N,)`` confidences, or ``None`` (empty ``score`` cells).
        classes: class names (the ``class_name`` column); default ``class_0``, ...
        precision: decimals of the coordinates (scores keep 6 significant digits).
    """
    points, labels, scores, classes = _check(points, labels, scores, classes)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(CSV_COLUMNS)
    for i, ((x, y), label) in enumerate(zip(points, labels)):
        score = '' if scores is None else f'{scores[i]:.6g}'
        writer.writerow([f'{x:.{precision}f}', f'{y:.{precision}f}', int(label), classes[label],
                         score])
    atomic_write_text(path, buf.getvalue())


def write_qupath_geojson(path: PathLike,
                         points,
                         labels,
                         scores=None,
                         classes: Optional[Sequence[str]] = None,
                         palette: Optional[Sequence] = None,
                         object_type: str = 'annotation',
                         pixel_offset: float = 0.5,
                         indent: Optional[int] = None) -> None:
    """Write a GeoJSON ``FeatureCollection`` of ``Point`` features that QuPath imports.

    Args:
        path: output ``.geojson`` file (parent folders are created).
        points, labels, scores, classes: as in :func:`write_points_csv`.
        palette: RGB colour per class (default: the visualizer's default palette).
        object_type: ``'annotation'`` or ``'detection'`` (QuPath object type).
        pixel_offset: added to both coordinates (see the module docstring; 0 keeps them as is).
        indent: JSON indentation (``None``: compact, one line).
    """
    if object_type not in QUPATH_OBJECT_TYPES:
        raise ValueError(f'object_type must be one of {QUPATH_OBJECT_TYPES}, got {object_type!r}')
    if not math.isfinite(pixel_offset):
        raise ValueError(f'pixel_offset must be finite, got {pixel_offset}')
    points, labels, scores, classes = _check(points, labels, scores, classes)
    from protocal.visualization import get_palette  # lazy: keeps the CSV path light
    colours = get_palette(len(classes), palette)
    features = []
    for i, ((x, y), label) in enumerate(zip(points, labels)):
        properties = dict(
            objectType=object_type,
            classification=dict(name=classes[label], color=[int(v) for v in colours[label]]))
        if scores is not None:
            properties['measurements'] = [dict(name='score', value=float(scores[i]))]
        features.append(
            dict(type='Feature',
                 geometry=dict(type='Point',
                               coordinates=[round(float(x) + pixel_offset, 4),
                                            round(float(y) + pixel_offset, 4)]),
                 properties=properties))
    text = json.dumps(dict(type='FeatureCollection', features=features), indent=indent)
    atomic_write_text(path, text + '\n')
