"""Read whole-slide images (Aperio SVS, pyramidal TIFF and the other OpenSlide formats).

The reader knows nothing of models. It wraps `OpenSlide <https://openslide.org>`_ through
``openslide-python`` with the native library from the ``openslide-bin`` wheel, so the whole stack
installs from PyPI with no system package. Why OpenSlide rather than the pure-Python ``tiffslide``:
it reads every common vendor format (SVS, NDPI, MRXS, SCN, BIF, Philips TIFF, DICOM, generic tiled
TIFF), it is the reference reader that QuPath and TIAToolbox agree with (same level geometry and
metadata keys, ``openslide.mpp-x``), and its JPEG decoding (libjpeg-turbo) is in C; ``tiffslide``
covers fewer formats and pulls in ``zarr`` / ``fsspec`` / ``imagecodecs``.

Coordinates follow ``docs/architecture.md``: pixel ``(col, row)`` has its centre at integer
``(x, y)``. A level with downsample ``d`` maps to level 0 by ``x0 = (x + 0.5) * d - 0.5``
(:func:`level_to_level0`), the resize rule of the architecture page.
"""
import math
import os
import os.path as osp
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    'SLIDE_SUFFIXES', 'SlideReadError', 'MissingResolutionError', 'WholeSlide', 'LevelChoice',
    'choose_level', 'level_to_level0', 'list_slides'
]

PathLike = Union[str, Path]

#: file suffixes of the formats OpenSlide 4 reads (a folder is scanned for these)
SLIDE_SUFFIXES = ('.svs', '.tif', '.tiff', '.ndpi', '.vms', '.vmu', '.scn', '.mrxs', '.svslide',
                  '.bif', '.dcm', '.czi')


class SlideReadError(RuntimeError):
    """A slide file that cannot be opened or read (missing, corrupt, unsupported format)."""


class MissingResolutionError(ValueError):
    """The slide has no microns-per-pixel metadata and no ``mpp`` override was given."""


def _openslide():
    try:
        import openslide
    except ImportError as err:  # pragma: no cover - the dependency is pinned in requirements
        raise ImportError('whole-slide reading needs openslide-python and openslide-bin: '
                          'pip install -r requirements/runtime.txt') from err
    return openslide


class WholeSlide:
    """An open whole-slide image.

    Args:
        path: slide file.
        mpp: microns per pixel of level 0, overriding the slide's metadata (``None``: read
            ``openslide.mpp-x`` / ``openslide.mpp-y``).

    Raises:
        SlideReadError: the file is missing, corrupt or in a format OpenSlide does not read; the
            message names the file.
    """

    def __init__(self, path: PathLike, mpp: Optional[float] = None):
        self.path = str(path)
        if not osp.isfile(self.path):
            raise SlideReadError(f'slide not found: {self.path}')
        openslide = _openslide()
        try:
            self._slide = openslide.OpenSlide(self.path)
        except (openslide.OpenSlideError, OSError, ValueError) as err:
            detail = str(err) or type(err).__name__
            raise SlideReadError(
                f'cannot read slide {self.path}: {detail} (corrupt file, or not a format '
                'OpenSlide reads; plain images go through tools/infer.py)') from err
        if mpp is not None and not (math.isfinite(float(mpp)) and float(mpp) > 0):
            raise ValueError(f'mpp override must be a positive number, got {mpp!r}')
        self._mpp_override = None if mpp is None else float(mpp)

    # ------------------------------------------------------------------ metadata
    @property
    def dimensions(self) -> Tuple[int, int]:
        """``(width, height)`` of level 0."""
        return tuple(self._slide.dimensions)

    @property
    def level_count(self) -> int:
        return self._slide.level_count

    @property
    def level_dimensions(self) -> List[Tuple[int, int]]:
        return [tuple(d) for d in self._slide.level_dimensions]

    @property
    def level_downsamples(self) -> List[float]:
        return [float(d) for d in self._slide.level_downsamples]

    @property
    def properties(self):
        return self._slide.properties

    @property
    def vendor(self) -> str:
        return str(self._slide.properties.get('openslide.vendor', 'unknown'))

    @property
    def metadata_mpp(self) -> Optional[float]:
        """Level-0 microns per pixel from the slide's metadata (mean of x and y), or ``None``."""
        values = []
        for key in ('openslide.mpp-x', 'openslide.mpp-y'):
            try:
                value = float(self._slide.properties.get(key, 'nan'))
            except ValueError:
                value = float('nan')
            if math.isfinite(value) and value > 0:
                values.append(value)
        return sum(values) / len(values) if values else None

    @property
    def mpp(self) -> Optional[float]:
        """Level-0 microns per pixel: the override if given, else the metadata, else ``None``."""
        return self._mpp_override if self._mpp_override is not None else self.metadata_mpp

    def require_mpp(self) -> float:
        """:attr:`mpp`, or a :class:`MissingResolutionError` naming the slide and the fix."""
        mpp = self.mpp
        if mpp is None:
            raise MissingResolutionError(
                f'slide {self.path} has no resolution metadata (openslide.mpp-x / mpp-y) and '
                'no --mpp override was given; pass the microns per pixel of level 0, e.g. '
                '--mpp 0.25 for a 40x scan or --mpp 0.5 for 20x')
        return mpp

    # ------------------------------------------------------------------ pixels
    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB ``height x width x 3`` uint8 pixels of ``level`` starting at ``(x, y)`` (level
        pixels). Areas outside the slide (or transparent) come back white."""
        down = self.level_downsamples[level]
        location = (int(round(x * down)), int(round(y * down)))
        try:
            region = self._slide.read_region(location, level, (int(width), int(height)))
        except Exception as err:  # OpenSlideError on a damaged tile, MemoryError, ...
            raise SlideReadError(f'cannot read region {(x, y, width, height)} of level {level} '
                                 f'of slide {self.path}: {err}') from err
        return _rgba_on_white(np.asarray(region))

    def thumbnail(self, max_side: int = 2048, min_downsample: int = 1,
                  max_block_bytes: int = 64 << 20) -> Tuple[np.ndarray, float]:
        """A downsampled RGB copy of the slide with memory bounded by ``max_block_bytes``.

        The slide is shrunk by the integer factor ``f`` that brings its longest side to at most
        ``max_side`` (and at least by ``min_downsample``): the level whose downsample is the
        largest one ``<= f`` is read in bands of rows and each band is reduced by exact block
        averaging, so even a slide without a pyramid never has to be held whole.

        Returns:
            ``(rgb, downsample)``: the thumbnail and its downsample relative to level 0 (thumbnail
            pixel ``(u, v)`` covers level-0 pixels ``[u * d, (u + 1) * d)``).
        """
        width0, height0 = self.dimensions
        factor = max(1, int(min_downsample), math.ceil(max(width0, height0) / max_side))
        downs = self.level_downsamples
        level = max((i for i, d in enumerate(downs) if d <= factor + 1e-6), key=lambda i: downs[i])
        lw, lh = self.level_dimensions[level]
        step = max(1, int(round(factor / downs[level])))   # block size in level pixels
        out_w, out_h = -(-lw // step), -(-lh // step)
        rows_per_band = max(step, (max_block_bytes // max(1, lw * 4)) // step * step)
        bands = []
        for y in range(0, lh, rows_per_band):
            band_h = min(rows_per_band, lh - y)
            band = self.read(level, 0, y, lw, band_h)
            bands.append(_block_mean(band, step))
        rgb = np.concatenate(bands, 0)[:out_h, :out_w]
        return rgb, downs[level] * step

    def close(self) -> None:
        self._slide.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f'WholeSlide({self.path!r}, vendor={self.vendor}, size={self.dimensions}, '
                f'levels={self.level_count}, mpp={self.mpp})')


def _rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an (un-premultiplied) RGBA array on white -> RGB uint8."""
    if rgba.ndim == 3 and rgba.shape[2] == 4:
        alpha = rgba[..., 3:4]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgba[..., :3])
        rgb = rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha.astype(np.uint16))
        return ((rgb + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(rgba[..., :3])


def _block_mean(rgb: np.ndarray, step: int) -> np.ndarray:
    """Mean over ``step x step`` blocks (``cv2.INTER_AREA`` on an integer factor); a partial block
    at the right/bottom edge is completed by repeating the last row/column."""
    if step == 1:
        return rgb
    import cv2
    h, w = rgb.shape[:2]
    ph, pw = -(-h // step) * step, -(-w // step) * step
    if (ph, pw) != (h, w):
        rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode='edge')
    return cv2.resize(rgb, (pw // step, ph // step), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class LevelChoice:
    """Where tiles are read and at which scale.

    Attributes:
        level: the pyramid level read.
        downsample: that level's downsample relative to level 0.
        level_mpp: microns per pixel of that level.
        scale: model pixels per level pixel (1.0 when the level already has the target
            resolution, within the tolerance of :func:`choose_level`).
        mpp: microns per pixel of the image the model sees (``level_mpp / scale``).
        size: ``(width, height)`` of the resampled level the tiles are cut from.
    """
    level: int
    downsample: float
    level_mpp: float
    scale: float
    mpp: float
    size: Tuple[int, int]

    def to_level0(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` points in the resampled level to level-0 pixels."""
        return level_to_level0(level_to_level0(points, 1.0 / self.scale), self.downsample)


def level_to_level0(points: np.ndarray, downsample: float) -> np.ndarray:
    """``x0 = (x + 0.5) * downsample - 0.5`` (pixel centres on integers, see the module doc)."""
    points = np.asarray(points, np.float64)
    return (points + 0.5) * float(downsample) - 0.5


def choose_level(slide: WholeSlide, target_mpp: Optional[float] = None,
                 tolerance: float = 0.1) -> LevelChoice:
    """Pick the level to read for a model trained at ``target_mpp`` microns per pixel.

    The coarsest level whose resolution is not coarser than the target by more than
    ``tolerance`` (relative) is read; if its resolution differs from the target by more than
    ``tolerance`` the tiles are resampled to the target. ``target_mpp=None`` reads level 0 as it
    is. A target finer than level 0 upsamples level 0 (with a warning).

    Raises:
        MissingResolutionError: the slide has no resolution (metadata or override).
    """
    mpp0 = slide.require_mpp()
    downs = slide.level_downsamples
    if target_mpp is None:
        level, scale = 0, 1.0
    else:
        target_mpp = float(target_mpp)
        if not (math.isfinite(target_mpp) and target_mpp > 0):
            raise ValueError(f'target_mpp must be a positive number, got {target_mpp!r}')
        fine_enough = [i for i, d in enumerate(downs) if mpp0 * d <= target_mpp * (1 + tolerance)]
        if not fine_enough:
            import warnings
            warnings.warn(f'{slide.path}: level 0 has {mpp0:.4g} um/px, coarser than the target '
                          f'{target_mpp:.4g} um/px; tiles are upsampled')
            level = 0
        else:
            level = max(fine_enough, key=lambda i: downs[i])
        scale = mpp0 * downs[level] / target_mpp
        if abs(scale - 1.0) <= tolerance:
            scale = 1.0
    lw, lh = slide.level_dimensions[level]
    size = (max(1, int(round(lw * scale))), max(1, int(round(lh * scale))))
    level_mpp = mpp0 * downs[level]
    return LevelChoice(level=level, downsample=downs[level], level_mpp=level_mpp, scale=scale,
                       mpp=level_mpp / scale, size=size)


def list_slides(inputs: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    """Slides from files, folders (files with :data:`SLIDE_SUFFIXES`, sorted) and ``.txt`` lists
    (one path per line, relative to the list's folder; blank lines and ``#`` comments skipped).

    Files are returned even if they turn out unreadable (the caller reports them per slide);
    a missing input or a folder without slides raises ``FileNotFoundError``.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    slides: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f'no slides ({", ".join(SLIDE_SUFFIXES)}) found in {path}')
            slides.extend(found)
        elif path.suffix.lower() == '.txt' and path.is_file():
            for line in path.read_text().splitlines():
                line = line.split('#', 1)[0].strip()
                if line:
                    entry = Path(line)
                    slides.append(entry if entry.is_absolute() else path.parent / entry)
        elif path.exists() or path.suffix.lower() in SLIDE_SUFFIXES:
            slides.append(path)   # a missing slide file is reported per slide, not fatal
        else:
            raise FileNotFoundError(f'input not found: {path} (expected a slide file, a folder '
                                    'of slides or a .txt list of slides)')
    return slides
