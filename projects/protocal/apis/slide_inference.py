"""Whole-slide cell detection: slide file -> QuPath GeoJSON, CSV, per-class counts, density map.

Pipeline (``docs/slides.md``)::

    slide -> level chosen by um/px (slide_reader) -> tissue mask on a thumbnail (slide_tissue)
      -> tiles of the tissue, read in parallel by DataLoader workers, batched
      -> model -> per-tile decode (the codec) -> keep the peaks of the tile's own region
      -> chunks flushed to disk (resume) -> duplicate suppression across tile borders
      -> writers (GeoJSON, CSV, counts JSON, density PNG) and one summary row per slide

Tiles are laid out like :meth:`PointDetector.slide_predict` and with the same functions
(:func:`~protocal.models.detectors.point_detector.tile_starts`,
:func:`~protocal.models.detectors.point_detector.owned_ranges`,
:meth:`PointHeatmapCodec.suppress_duplicates`): each pixel of the slide is owned by the one tile
whose centre is nearest, a tile keeps only the peaks it owns, and peaks of one class closer than
the codec's ``min_distance`` across an ownership border are merged (highest score wins). With an
overlap of at least ``2 * (min_distance + exclude_border)`` every owned peak's window lies inside
its tile, so a cell on a tile border is reported exactly once.

Memory does not grow with the slide: the loader holds a bounded number of tiles, detections are
flushed to ``<out>/<slide>/.partial/`` every ``chunk_tiles`` tiles, and only the final detections
(the output itself) are held at the end.

The model is anything with ``codec``, ``classes``, ``palette`` and
``__call__(tiles) -> probabilities`` (:class:`TileModel`); a protocal :class:`PointDetector` is
wrapped by :class:`DetectorTileModel` automatically.
"""
import csv
import hashlib
import io
import json
import math
import os
import os.path as osp
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from protocal.models.detectors.point_detector import owned_ranges, tile_starts
from protocal.utils import atomic_write, release_freed_memory
from .export import _check as _check_detections
from .export import atomic_write_text, write_points_csv
from .slide_reader import (LevelChoice, MissingResolutionError, SlideReadError, WholeSlide,
                           choose_level, list_slides)
from .slide_tissue import TissueIntegral, detect_tissue, render_density_map

__all__ = [
    'DetectorTileModel', 'SlideTileDataset', 'OutputFolderError', 'plan_tiles', 'infer_slide',
    'infer_slides', 'write_qupath_geojson_stream', 'write_cohort_summary', 'ensure_writable_dir'
]

PathLike = Union[str, Path]
#: names of the files written for each slide, inside ``<out_dir>/<slide stem>/``
OUTPUT_FILES = dict(geojson='cells.geojson', csv='cells.csv', counts='counts.json',
                    tissue='tissue_mask.png', density='density.png')
PARTIAL_DIR = '.partial'
SUMMARY_CSV = 'cohort_summary.csv'
SUMMARY_JSON = 'cohort_summary.json'


class OutputFolderError(OSError):
    """The output folder cannot be created or written."""


# ------------------------------------------------------------------------------------------------
# model adaptor
# ------------------------------------------------------------------------------------------------
class DetectorTileModel:
    """Run a protocal :class:`PointDetector` on batches of slide tiles.

    ``__call__(tiles)`` takes a ``(B, H, W, 3)`` uint8 RGB tensor and returns the ``(B, K + 1,
    H, W)`` float32 softmax probabilities, applying the detector's own data preprocessor (channel
    order, mean/std, padding to its size divisor). On CUDA the forward runs under
    ``torch.autocast`` (float16) when ``amp`` is True.
    """

    def __init__(self, model: torch.nn.Module, amp: bool = True):
        self.model = model.eval()
        self.codec = model.head.codec
        meta = getattr(model, 'dataset_meta', None) or {}
        self.classes = tuple(meta.get('classes') or
                             [f'class_{i}' for i in range(self.codec.num_classes)])
        self.palette = meta.get('palette')
        self.device = next(model.parameters()).device
        self.amp = bool(amp) and self.device.type == 'cuda'
        pre = model.data_preprocessor
        self._bgr_input = bool(getattr(pre, '_channel_conversion', False))

    @property
    def fingerprint(self) -> str:
        """sha1 of the weights and the codec settings (identifies the model for ``resume``)."""
        digest = hashlib.sha1()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(repr(self.codec).encode())
        return digest.hexdigest()

    @torch.no_grad()
    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        height, width = tiles.shape[1:3]
        x = tiles.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if self._bgr_input:
            x = x.flip(1)  # the preprocessor expects mmcv's BGR and converts it to RGB
        data = self.model.data_preprocessor(dict(inputs=x, data_samples=None), False)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16,
                            enabled=self.amp):
            logits, _ = self.model.head(self.model.extract_feat(data['inputs']))
        return logits.float().softmax(1)[:, :, :height, :width]


TileModel = Any  # codec, classes, palette, __call__(uint8 (B, H, W, 3)) -> (B, K + 1, H, W)


def _as_tile_model(model, amp: bool) -> TileModel:
    if isinstance(model, torch.nn.Module) and hasattr(model, 'head'):
        return DetectorTileModel(model, amp=amp)
    for attr in ('codec', 'classes'):
        if not hasattr(model, attr):
            raise TypeError(f'model must be a PointDetector or have a {attr!r} attribute and be '
                            f'callable on (B, H, W, 3) uint8 tiles; got {type(model).__name__}')
    return model


# ------------------------------------------------------------------------------------------------
# tiles
# ------------------------------------------------------------------------------------------------
def plan_tiles(choice: LevelChoice, tile_size: int, overlap: int,
               tissue: Optional[TissueIntegral] = None,
               min_tissue: float = 0.0) -> Tuple[np.ndarray, int]:
    """Tiles of the resampled level, row-major, with their owned regions and read boxes.

    Tiles of ``tile_size`` every ``tile_size - overlap`` px (:func:`tile_starts`); each owns the
    part of the level nearest its centre (:func:`owned_ranges`). A tile is kept when the tissue
    fraction of its owned region (clipped to the tile) is ``> min_tissue``.

    Returns:
        ``(tiles, total)``: a float64 array with one row per kept tile
        ``[x0, y0, w, h, own_x0, own_x1, own_y0, own_y1, lx, ly, lw, lh]`` (tile box in the
        resampled level, owned ranges (may be infinite), and the box read from the level), and the
        number of tiles before the tissue filter.
    """
    if overlap < 0 or overlap >= tile_size:
        raise ValueError(f'need 0 <= overlap < tile_size, got overlap={overlap}, '
                         f'tile_size={tile_size}')
    width, height = choice.size
    stride = tile_size - overlap
    xs, ys = tile_starts(width, tile_size, stride), tile_starts(height, tile_size, stride)
    own_x, own_y = owned_ranges(xs, tile_size, width), owned_ranges(ys, tile_size, height)
    level_w = int(round(width / choice.scale))
    level_h = int(round(height / choice.scale))
    rows = []
    for y0, (oy0, oy1) in zip(ys, own_y):
        h = min(tile_size, height)
        for x0, (ox0, ox1) in zip(xs, own_x):
            w = min(tile_size, width)
            if choice.scale == 1.0:
                lx, ly, lw, lh = x0, y0, w, h
            else:
                lx = int(math.floor(x0 / choice.scale))
                ly = int(math.floor(y0 / choice.scale))
                lw = max(1, min(level_w, int(math.ceil((x0 + w) / choice.scale))) - lx)
                lh = max(1, min(level_h, int(math.ceil((y0 + h) / choice.scale))) - ly)
            if tissue is not None:
                # owned region clipped to the tile, in level-0 pixels
                bx0, bx1 = max(ox0, x0), min(ox1, x0 + w)
                by0, by1 = max(oy0, y0), min(oy1, y0 + h)
                f = choice.downsample / choice.scale
                if tissue.fraction(bx0 * f, by0 * f, bx1 * f, by1 * f) <= min_tissue:
                    continue
            rows.append([x0, y0, w, h, ox0, ox1, oy0, oy1, lx, ly, lw, lh])
    total = len(xs) * len(ys)
    return np.asarray(rows, np.float64).reshape(-1, 12), total


class SlideTileDataset(torch.utils.data.Dataset):
    """Tiles of one slide level for a DataLoader: item ``i`` is ``(tile, i)`` with ``tile`` a
    ``tile_size x tile_size x 3`` uint8 RGB tensor (white beyond the slide; resampled to the
    model's resolution when ``scale != 1``).

    Every worker process opens its own slide handle (handles are not shared across ``fork``).
    """

    def __init__(self, path: PathLike, level: int, scale: float, tiles: np.ndarray,
                 tile_size: int):
        self.path, self.level, self.scale = str(path), int(level), float(scale)
        self.tiles, self.tile_size = tiles, int(tile_size)
        self._slide, self._pid = None, None

    def __len__(self) -> int:
        return len(self.tiles)

    def _handle(self) -> WholeSlide:
        if self._slide is None or self._pid != os.getpid():
            self._slide, self._pid = WholeSlide(self.path), os.getpid()
        return self._slide

    def __getitem__(self, i: int):
        x0, y0, w, h, _, _, _, _, lx, ly, lw, lh = self.tiles[i]
        w, h, lw, lh = int(w), int(h), int(lw), int(lh)
        rgb = self._handle().read(self.level, int(lx), int(ly), lw, lh)
        if (lw, lh) != (w, h):
            # PIL, not OpenCV: OpenCV's thread pool deadlocks in a process forked after the parent
            # used it (the tissue mask does), and reconfiguring it in the child hangs as well
            from PIL import Image
            resample = Image.Resampling.BOX if lw > w else Image.Resampling.BILINEAR
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), resample))
        tile = np.full((self.tile_size, self.tile_size, 3), 255, np.uint8)
        tile[:h, :w] = rgb
        return torch.from_numpy(tile), i

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_slide'], state['_pid'] = None, None
        return state


def _tile_points_to_level0(points: np.ndarray, row: np.ndarray, choice: LevelChoice) -> np.ndarray:
    """Tile pixel coordinates -> level-0 pixels, through the box actually read from the level."""
    _, _, w, h, _, _, _, _, lx, ly, lw, lh = row
    level_pts = (points + 0.5) * np.array([lw / w, lh / h]) - 0.5 + np.array([lx, ly])
    return (level_pts + 0.5) * choice.downsample - 0.5


# ------------------------------------------------------------------------------------------------
# output helpers
# ------------------------------------------------------------------------------------------------
def ensure_writable_dir(path: PathLike) -> Path:
    """Create ``path`` if needed and check that a file can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f'.write_test_{os.getpid()}'
        with open(probe, 'w') as f:
            f.write('ok')
        probe.unlink()
    except OSError as err:
        raise OutputFolderError(f'output folder {path} is not writable: {err}') from err
    return path


def write_qupath_geojson_stream(path: PathLike, points, labels, scores=None,
                                classes: Optional[Sequence[str]] = None,
                                palette: Optional[Sequence] = None,
                                object_type: str = 'detection', pixel_offset: float = 0.5,
                                chunk: int = 20000) -> None:
    """:func:`~protocal.apis.export.write_qupath_geojson` for millions of points.

    Same file, byte for byte, as ``write_qupath_geojson(..., indent=None)``, but features are
    serialised in chunks straight to disk instead of being built as one list of dicts (which takes
    about a kilobyte of Python objects per cell). Written atomically.
    """
    from protocal.visualization import get_palette
    if object_type not in ('annotation', 'detection'):
        raise ValueError(f"object_type must be 'annotation' or 'detection', got {object_type!r}")
    points, labels, scores, classes = _check_detections(points, labels, scores, classes)
    colours = [[int(v) for v in c] for c in get_palette(len(classes), palette)]
    classifications = [dict(name=name, color=colours[i]) for i, name in enumerate(classes)]
    coords = np.round(points + pixel_offset, 4)
    with atomic_write(osp.abspath(os.fspath(path)), 'w', encoding='utf-8', newline='') as f:
        f.write('{"type": "FeatureCollection", "features": [')
        for start in range(0, len(points), chunk):
            parts = []
            for i in range(start, min(start + chunk, len(points))):
                properties = dict(objectType=object_type,
                                  classification=classifications[labels[i]])
                if scores is not None:
                    properties['measurements'] = [dict(name='score', value=float(scores[i]))]
                parts.append(json.dumps(dict(
                    type='Feature',
                    geometry=dict(type='Point',
                                  coordinates=[float(coords[i, 0]), float(coords[i, 1])]),
                    properties=properties)))
            f.write((', ' if start else '') + ', '.join(parts))
        f.write(']}\n')


def _imwrite_atomic(path: Path, rgb_or_gray: np.ndarray) -> None:
    import cv2
    img = rgb_or_gray if rgb_or_gray.ndim == 2 else rgb_or_gray[..., ::-1]
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(img))
    if not ok:
        raise OSError(f'could not encode {path}')
    with atomic_write(str(path), 'wb') as f:
        f.write(buf.tobytes())


def _file_id(path: PathLike) -> Dict[str, Any]:
    st = os.stat(path)
    return dict(path=osp.abspath(path), bytes=st.st_size, mtime=int(st.st_mtime))


# ------------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr: tiles done, tiles/s, ETA and cells so far."""

    def __init__(self, name: str, total: int, done: int = 0, enabled: bool = True,
                 stream=None, interval: float = 0.5):
        self.name, self.total, self.done, self.start_done = name, total, done, done
        self.enabled = enabled and total > 0
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, 'isatty', lambda: False)()
        self.interval = interval if self.tty else 10.0
        self.start = self.last = time.perf_counter()
        self.cells = 0

    def update(self, tiles: int, cells: int) -> None:
        self.done += tiles
        self.cells += cells
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval or self.done >= self.total):
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float('inf')
        eta_s = '?' if not math.isfinite(eta) else time.strftime('%H:%M:%S', time.gmtime(eta))
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = (f'{self.name} [{"#" * filled}{"." * (width - filled)}] {self.done}/{self.total} '
                f'tiles  {rate:.2f} tiles/s  ETA {eta_s}  {self.cells} cells')
        self.stream.write(('\r' + line) if self.tty else (line + '\n'))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write('\n')
            self.stream.flush()


# ------------------------------------------------------------------------------------------------
# one slide
# ------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def infer_slide(model,
                slide_path: PathLike,
                out_dir: PathLike,
                *,
                mpp: Optional[float] = None,
                target_mpp: Optional[float] = None,
                tile_size: int = 512,
                overlap: Optional[int] = None,
                batch_size: int = 4,
                num_workers: int = 2,
                tissue_method: str = 'saturation',
                min_tissue: float = 0.0,
                thumbnail_side: int = 2048,
                thumbnail_mpp: float = 2.0,
                chunk_tiles: int = 64,
                resume: bool = False,
                amp: bool = True,
                object_type: str = 'detection',
                density_sigma_um: float = 50.0,
                progress: bool = True,
                model_id: Optional[str] = None,
                on_chunk: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Detect the cells of one slide and write its outputs to ``out_dir/<slide stem>/``.

    Files: ``cells.geojson`` (QuPath detections: a point per cell with class name, colour and
    score, level-0 pixel coordinates with QuPath's +0.5 pixel-corner origin), ``cells.csv``
    (``x,y,class,class_name,score`` in level-0 pixels, pixel centres on integers),
    ``counts.json`` (per-class counts, tissue area, densities, settings; written last, it marks
    the slide as done), ``tissue_mask.png`` and ``density.png``.

    Args:
        model: a :class:`PointDetector` (wrapped in :class:`DetectorTileModel`) or a tile model.
        slide_path: the slide.
        out_dir: output root.
        mpp: level-0 microns per pixel, overriding the metadata (required when it has none).
        target_mpp: microns per pixel the model was trained at (``None``: level 0 as is).
        tile_size, overlap: tile geometry at the model's resolution (``overlap=None``:
            ``max(tile_size // 8, 2 * (min_distance + exclude_border))``).
        batch_size, num_workers: tiles per forward pass, DataLoader reader processes.
        tissue_method, min_tissue: :func:`detect_tissue` method; tiles whose owned region has a
            tissue fraction ``<= min_tissue`` are skipped (``-1``: process every tile).
        thumbnail_side, thumbnail_mpp: the thumbnail (tissue mask, density map) has at most
            ``thumbnail_side`` px on its longest side and about ``thumbnail_mpp`` um/px or coarser.
        chunk_tiles: detections are flushed to disk every this many tiles (rounded up to a
            multiple of ``batch_size`` so that a resumed run sees the same batches).
        resume: skip the slide if it is already done with the same settings and model, or
            restart it from its last flushed chunk.
        amp: float16 autocast on CUDA.
        on_chunk: called with ``(tiles_done, tiles_total)`` after every flushed chunk.

    Returns:
        the summary record of the slide (also the content of ``counts.json``).

    Raises:
        SlideReadError, MissingResolutionError, OutputFolderError.
    """
    t_start = time.perf_counter()
    slide_path = Path(slide_path)
    tile_model = _as_tile_model(model, amp)
    codec = tile_model.codec
    classes = [str(c) for c in tile_model.classes]
    margin = 2 * (codec.min_distance + codec.exclude_border)
    if overlap is None:
        overlap = max(tile_size // 8, margin)
    elif overlap < margin:
        warnings.warn(f'tile overlap {overlap} is smaller than 2 * (min_distance + '
                      f'exclude_border) = {margin}; peaks near tile borders may be missed')
    batch_size = max(1, int(batch_size))
    chunk_tiles = max(1, -(-int(chunk_tiles) // batch_size)) * batch_size

    slide_dir = ensure_writable_dir(Path(out_dir) / slide_path.stem)
    paths = {k: slide_dir / v for k, v in OUTPUT_FILES.items()}
    partial = slide_dir / PARTIAL_DIR

    with WholeSlide(slide_path, mpp=mpp) as slide:
        mpp0 = slide.require_mpp()
        choice = choose_level(slide, target_mpp)
        if model_id is None:
            model_id = getattr(tile_model, 'fingerprint', None) or type(tile_model).__name__
        fingerprint = dict(
            slide=_file_id(slide_path), model=str(model_id), mpp=mpp0, target_mpp=target_mpp,
            level=choice.level, scale=choice.scale, tile_size=int(tile_size),
            overlap=int(overlap), batch_size=batch_size, chunk_tiles=chunk_tiles,
            tissue_method=tissue_method, min_tissue=float(min_tissue),
            thumbnail_side=int(thumbnail_side), thumbnail_mpp=float(thumbnail_mpp),
            classes=classes, codec=repr(codec))
        if resume:
            done = _read_json(paths['counts'])
            if (done and done.get('status') == 'done' and done.get('fingerprint') == fingerprint
                    and all(p.exists() for p in paths.values())):
                done['status'] = 'skipped'
                done['note'] = 'already done (--resume)'
                return done

        thumb, thumb_ds = slide.thumbnail(thumbnail_side,
                                          max(1, int(thumbnail_mpp / mpp0)))
        tissue = detect_tissue(thumb, mpp=mpp0 * thumb_ds, method=tissue_method)
        _imwrite_atomic(paths['tissue'], tissue.astype(np.uint8) * 255)
        tiles, total_tiles = plan_tiles(choice, int(tile_size), int(overlap),
                                        TissueIntegral(tissue, thumb_ds), float(min_tissue))
        level_info = dict(level=choice.level, level_downsample=choice.downsample,
                          level_mpp=choice.level_mpp, model_mpp=choice.mpp, scale=choice.scale,
                          width=slide.dimensions[0], height=slide.dimensions[1],
                          vendor=slide.vendor)

    # ---- resume state
    state = _read_json(partial / 'state.json') if resume else None
    if state is not None and state.get('fingerprint') != fingerprint:
        warnings.warn(f'{slide_path}: partial results were made with other settings or another '
                      'model; starting the slide again')
        state = None
    if state is None:
        shutil.rmtree(partial, ignore_errors=True)
        state = dict(fingerprint=fingerprint, tiles_done=0, chunks=0)
    partial.mkdir(parents=True, exist_ok=True)
    chunk_files = [partial / f'chunk_{i:05d}.npz' for i in range(state['chunks'])]
    if not all(p.exists() for p in chunk_files):
        warnings.warn(f'{slide_path}: partial results are incomplete; starting again')
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        state = dict(fingerprint=fingerprint, tiles_done=0, chunks=0)
        chunk_files = []
    start_tile = int(state['tiles_done'])

    warning = None
    if len(tiles) == 0:
        warning = f'no tissue found in {slide_path}: empty outputs written'
        warnings.warn(warning)

    # ---- streaming inference
    bar = _Progress(slide_path.name, len(tiles), start_tile, enabled=progress)
    buffers: List[Tuple[np.ndarray, ...]] = []
    buffered_tiles = 0

    def flush():
        nonlocal buffers, buffered_tiles
        arrays = _concat(buffers)
        name = partial / f'chunk_{state["chunks"]:05d}.npz'
        with atomic_write(str(name), 'wb') as f:
            np.savez(f, **arrays)
        chunk_files.append(name)
        state['chunks'] += 1
        state['tiles_done'] += buffered_tiles
        atomic_write_text(partial / 'state.json', json.dumps(state))
        buffers, buffered_tiles = [], 0
        if on_chunk is not None:
            on_chunk(state['tiles_done'], len(tiles))

    t_loop = time.perf_counter()
    if start_tile < len(tiles):
        dataset = SlideTileDataset(slide_path, choice.level, choice.scale, tiles[start_tile:],
                                   int(tile_size))
        device = getattr(tile_model, 'device', torch.device('cpu'))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=int(num_workers),
            pin_memory=torch.device(device).type == 'cuda',
            prefetch_factor=2 if num_workers > 0 else None)
        try:
            for batch, index in loader:
                probs = tile_model(batch)
                cells = 0
                for prob, i in zip(probs, index.tolist()):
                    row = tiles[start_tile + i]
                    w, h = int(row[2]), int(row[3])
                    det = codec.decode(prob[:, :h, :w])
                    pts = det['points'].cpu().double().numpy()
                    work = pts + row[:2]
                    keep = ((work[:, 0] >= row[4]) & (work[:, 0] < row[5]) &
                            (work[:, 1] >= row[6]) & (work[:, 1] < row[7]))
                    buffers.append((work[keep].astype(np.float32),
                                    _tile_points_to_level0(pts[keep], row, choice),
                                    det['labels'].cpu().numpy()[keep],
                                    det['scores'].cpu().float().numpy()[keep]))
                    cells += int(keep.sum())
                buffered_tiles += len(index)
                del batch, probs
                release_freed_memory()
                if buffered_tiles >= chunk_tiles:
                    flush()
                bar.update(len(index), cells)
            if buffered_tiles:
                flush()
        finally:
            bar.close()
    infer_seconds = time.perf_counter() - t_loop

    # ---- merge chunks, suppress duplicates across tile borders, write
    merged = _concat([tuple(np.load(p)[k] for k in ('work', 'level0', 'labels', 'scores'))
                      for p in chunk_files])
    if len(merged['labels']):
        keep = codec.suppress_duplicates(torch.from_numpy(merged['work']),
                                         torch.from_numpy(merged['labels']),
                                         torch.from_numpy(merged['scores'])).numpy()
        merged = {k: v[keep] for k, v in merged.items()}
        order = np.lexsort((merged['level0'][:, 0], merged['level0'][:, 1]))
        merged = {k: v[order] for k, v in merged.items()}
    points0, labels, scores = merged['level0'], merged['labels'], merged['scores']

    palette = getattr(tile_model, 'palette', None)
    write_points_csv(paths['csv'], points0, labels, scores, classes)
    write_qupath_geojson_stream(paths['geojson'], points0, labels, scores, classes, palette,
                                object_type=object_type)
    density, peak = render_density_map(thumb, points0, thumb_ds, mpp0, sigma_um=density_sigma_um,
                                       tissue=tissue)
    _imwrite_atomic(paths['density'], density)

    tissue_mm2 = float(tissue.sum()) * (mpp0 * thumb_ds)**2 / 1e6
    counts = {name: int((labels == c).sum()) for c, name in enumerate(classes)}
    record = dict(
        slide=str(slide_path), status='done', error='', warning=warning or '',
        cells=int(len(labels)), counts=counts, tissue_mm2=round(tissue_mm2, 6),
        cells_per_mm2=round(len(labels) / tissue_mm2, 3) if tissue_mm2 > 0 else 0.0,
        peak_density_per_mm2=round(peak, 3), mpp=mpp0, **level_info,
        tiles=int(len(tiles)), tiles_total=int(total_tiles),
        tiles_skipped=int(total_tiles - len(tiles)), tiles_resumed=start_tile,
        seconds=round(time.perf_counter() - t_start, 3), inference_seconds=round(infer_seconds,
                                                                                 3),
        outputs={k: str(p) for k, p in paths.items()}, fingerprint=fingerprint)
    atomic_write_text(paths['counts'], json.dumps(record, indent=2) + '\n')
    shutil.rmtree(partial, ignore_errors=True)
    return record


def _concat(parts: Sequence[Tuple[np.ndarray, ...]]) -> Dict[str, np.ndarray]:
    keys = ('work', 'level0', 'labels', 'scores')
    if not parts:
        return dict(work=np.zeros((0, 2), np.float32), level0=np.zeros((0, 2), np.float64),
                    labels=np.zeros(0, np.int64), scores=np.zeros(0, np.float32))
    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(keys)}


# ------------------------------------------------------------------------------------------------
# many slides
# ------------------------------------------------------------------------------------------------
def write_cohort_summary(out_dir: PathLike, records: Sequence[dict],
                         classes: Sequence[str]) -> Tuple[Path, Path]:
    """``cohort_summary.csv`` (one row per slide, per-class counts as columns) and
    ``cohort_summary.json`` (the full records) in ``out_dir``."""
    out_dir = Path(out_dir)
    columns = (['slide', 'status', 'cells'] + [f'n_{c}' for c in classes] +
               ['tissue_mm2', 'cells_per_mm2', 'level', 'model_mpp', 'tiles', 'seconds',
                'warning', 'error'])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(columns)
    for r in records:
        counts = r.get('counts') or {}
        writer.writerow([r.get('slide', ''), r.get('status', ''), r.get('cells', '')] +
                        [counts.get(c, '') for c in classes] +
                        [r.get('tissue_mm2', ''), r.get('cells_per_mm2', ''), r.get('level', ''),
                         r.get('model_mpp', ''), r.get('tiles', ''), r.get('seconds', ''),
                         r.get('warning', ''), r.get('error', '')])
    csv_path, json_path = out_dir / SUMMARY_CSV, out_dir / SUMMARY_JSON
    atomic_write_text(csv_path, buf.getvalue())
    slim = [{k: v for k, v in r.items() if k != 'fingerprint'} for r in records]
    atomic_write_text(json_path, json.dumps(slim, indent=2) + '\n')
    return csv_path, json_path


def infer_slides(model,
                 slides: Union[PathLike, Sequence[PathLike]],
                 out_dir: PathLike,
                 *,
                 rank: int = 0,
                 world_size: int = 1,
                 log: Optional[Callable[[str], None]] = print,
                 **kwargs) -> List[Dict[str, Any]]:
    """Run :func:`infer_slide` on slides (files, folders, ``.txt`` lists), one after the other.

    A slide that fails (unreadable, no resolution, ...) is reported and skipped: the others go on
    and the cohort summary lists it with ``status='failed'`` and the error. With
    ``world_size > 1`` (``torch.distributed`` initialised) process ``rank`` takes slides
    ``rank, rank + world_size, ...`` and the records are gathered so that rank 0 writes one
    merged summary.

    Returns:
        the records of all slides (in input order) on rank 0; this process's records elsewhere.

    Raises:
        OutputFolderError: before any slide, if ``out_dir`` is not writable.
    """
    slide_list = list_slides(slides)
    stems: Dict[str, Path] = {}
    for path in slide_list:
        if path.stem in stems and stems[path.stem] != path:
            raise ValueError(f'two slides would write to the same output folder '
                             f'{Path(out_dir) / path.stem}: {stems[path.stem]} and {path}')
        stems[path.stem] = path
    ensure_writable_dir(out_dir)
    tile_model = _as_tile_model(model, kwargs.get('amp', True))
    classes = [str(c) for c in tile_model.classes]
    if kwargs.get('model_id') is None:
        kwargs['model_id'] = getattr(tile_model, 'fingerprint', None) or type(tile_model).__name__
    mine = list(range(rank, len(slide_list), world_size))
    records: List[Tuple[int, dict]] = []
    for i in mine:
        path = slide_list[i]
        try:
            record = infer_slide(tile_model, path, out_dir, **kwargs)
        except OutputFolderError:
            raise
        except Exception as err:  # noqa: BLE001 - one bad slide must not stop the cohort
            record = dict(slide=str(path), status='failed', error=f'{type(err).__name__}: {err}')
            if log:
                log(f'FAILED {path}: {record["error"]}')
        else:
            if log:
                counts = ', '.join(f'{k}: {v}' for k, v in record.get('counts', {}).items())
                extra = f' ({record["warning"]})' if record.get('warning') else ''
                log(f'{record["status"]} {path}: {record.get("cells", 0)} cells ({counts}) in '
                    f'{record.get("seconds", 0):.1f} s{extra}')
        records.append((i, record))
    if world_size > 1:
        import torch.distributed as dist
        gathered: List[Any] = [None] * world_size
        dist.all_gather_object(gathered, records)
        records = [r for part in gathered for r in part]
    records.sort(key=lambda item: item[0])
    result = [r for _, r in records]
    if rank == 0:
        write_cohort_summary(out_dir, result, classes)
    return result
