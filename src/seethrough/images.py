"""Reading images safely: paths, bytes, file objects, PIL images and numpy arrays to RGB.

Every reader returns a fully decoded ``PIL.Image.Image`` in mode ``"RGB"``. Failures raise
:class:`~seethrough.errors.InvalidImageError` (or :class:`~seethrough.errors.ImageTooLargeError`)
with a one-line message that names the image, so callers never see a raw PIL traceback. The pixel
count is checked from the header before any pixel data is decoded (decompression-bomb guard);
that limit alone decides, also when it is above PIL's own cap (``Image.MAX_IMAGE_PIXELS``).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, InvalidImageError, InvalidParameterError, suggest

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "load_image",
    "to_array",
    "is_raw_image",
    "list_samples",
    "sample_image",
]

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height) decoded by default; override per call or with the env var."""

MAX_PIXELS_ENV = "SEETHROUGH_MAX_PIXELS"

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
"""File extensions (lower case, without the dot) picked up when scanning a folder for images."""

SAMPLE_PREFIX = "sample:"

ImageSource = str | os.PathLike | bytes | bytearray | IO[bytes] | Image.Image | np.ndarray
"""Anything :func:`load_image` accepts."""

# Samples shipped inside scikit-image itself (no download needed), by skimage.data function name.
_SAMPLES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "stereo_motorcycle",
    "text",
)

_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# What PIL's decoders raise on corrupt or truncated data.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error)


def _max_pixels(max_pixels: int | None) -> int:
    """Resolve the pixel limit: explicit argument, then the env var, then the default."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV)
        if raw is None:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            raise InvalidParameterError(
                f"{MAX_PIXELS_ENV}={raw!r} is not an integer number of pixels"
            ) from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise InvalidParameterError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return max_pixels


def _check_size(name: str, width: int, height: int, limit: int) -> None:
    """Raise :class:`ImageTooLargeError` if ``width * height`` exceeds ``limit``."""
    if width * height > limit:
        raise ImageTooLargeError(
            f"image '{name}' is {width}x{height} = {width * height:,} pixels, more than the limit "
            f"of {limit:,} (raise it with max_pixels= or {MAX_PIXELS_ENV})",
            size=(width, height),
            limit=limit,
        )


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Flatten an image with transparency onto a white background."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")


def _gray_array_to_rgb(gray: np.ndarray) -> Image.Image:
    """Turn a 2-D uint8 array into an RGB image."""
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), mode="L").convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to RGB (alpha composited over white)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    if mode in _SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
        return _gray_array_to_rgb(np.rint(values * (255 / 65535)))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return _gray_array_to_rgb(np.clip(np.rint(values * scale), 0, 255))
    return image.convert("RGB")


def _reason(exc: BaseException) -> str:
    """First line of an exception's message (or its type name), for one-line error messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _finish(image: Image.Image, name: str, limit: int) -> Image.Image:
    """Check the size of an opened image, decode it, apply EXIF orientation, convert to RGB."""
    _check_size(name, image.width, image.height, limit)
    try:
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))  # exif_transpose always returns a copy
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(f"image '{name}' is truncated or corrupt: {_reason(exc)}") from None


def _open(fp: IO[bytes], name: str) -> Image.Image:
    """Open ``fp`` with PIL (header only), turning PIL's refusals into typed errors."""
    try:
        with warnings.catch_warnings():
            # _finish checks the size against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except UnidentifiedImageError:
        raise InvalidImageError(f"'{name}' is not a recognised image file") from None
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(f"image '{name}' is truncated or corrupt: {_reason(exc)}") from None


def _decode(fp: IO[bytes], name: str, limit: int) -> Image.Image:
    """Open ``fp`` with PIL (header only), then hand it to :func:`_finish`.

    Our limit rules, not PIL's own cap (``Image.MAX_IMAGE_PIXELS``): should PIL refuse the
    header, it is read again with that cap lifted, and the size checked against ``limit``.
    """
    try:
        fp.seek(0)
    except (AttributeError, OSError):  # not seekable: PIL would read it all anyway
        fp = io.BytesIO(fp.read())
    try:
        image = _open(fp, name)
    except Image.DecompressionBombError:  # over PIL's cap; maybe not over ours
        with _pil_cap_lifted():
            with _open(fp, name) as image:
                return _finish(image, name, limit)
    with image:
        return _finish(image, name, limit)


_PIL_CAP = threading.Lock()
_pil_cap_users = 0
_pil_cap_saved: int | None = None


@contextmanager
def _pil_cap_lifted() -> Iterator[None]:
    """A block in which PIL's own pixel cap is off (our limit is checked from the header
    before any decoding); the cap comes back when the last such block in any thread ends."""
    global _pil_cap_users, _pil_cap_saved
    with _PIL_CAP:
        if _pil_cap_users == 0:
            _pil_cap_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_cap_users += 1
    try:
        yield
    finally:
        with _PIL_CAP:
            _pil_cap_users -= 1
            if _pil_cap_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_cap_saved


def _open_path(path: Path, limit: int) -> Image.Image:
    """Read an image file, turning file-system problems into :class:`InvalidImageError`."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "symlink loop"
        elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
            reason = "broken symlink" if path.is_symlink() else "file not found"
        else:
            reason = exc.strerror or str(exc)
        raise InvalidImageError(f"cannot read image '{path}': {reason}") from None
    except RuntimeError:  # some Python versions report a symlink loop this way
        raise InvalidImageError(f"cannot read image '{path}': symlink loop") from None
    if stat.S_ISDIR(mode):
        raise InvalidImageError(f"cannot read image '{path}': it is a directory")
    try:
        fp = path.open("rb")
    except OSError as exc:
        raise InvalidImageError(f"cannot read image '{path}': {exc.strerror or exc}") from None
    with fp:
        return _decode(fp, str(path), limit)


def _array_to_image(array: np.ndarray, name: str = "<array>") -> Image.Image:
    """Convert an HxW / HxWx{1,3,4} array (uint8, uint16, bool or float in [0, 1]) to RGB."""
    shape = array.shape
    if not (array.ndim == 2 or (array.ndim == 3 and shape[2] in (1, 3, 4))):
        raise InvalidImageError(
            f"image '{name}' has shape {shape}: expected HxW, HxWx1, HxWx3 or HxWx4"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise InvalidImageError(f"image '{name}' is empty (shape {shape})")
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        data = np.rint(array * (255 / 65535)).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise InvalidImageError(
                f"image '{name}' is a float array with values outside [0, 1] "
                f"(min {array.min():.4g}, max {array.max():.4g}); scale it to [0, 1]"
            )
        data = np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    else:
        raise InvalidImageError(
            f"image '{name}' has unsupported dtype {array.dtype}: use uint8, uint16, bool "
            "or float in [0, 1]"
        )
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim == 2:
        return _gray_array_to_rgb(data)
    image = Image.fromarray(
        np.ascontiguousarray(data), mode="RGB" if data.shape[2] == 3 else "RGBA"
    )
    return _to_rgb(image)


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> Image.Image:
    """Read an image from any supported source and return it decoded, in mode ``"RGB"``.

    Args:
        source: a path (``str`` / ``os.PathLike``; ``"sample:NAME"`` loads a bundled sample),
            raw ``bytes``, a binary file object, a ``PIL.Image.Image`` or a numpy array (HxW,
            HxWx1, HxWx3 or HxWx4; uint8, uint16, bool, or float in [0, 1]).
        max_pixels: largest accepted width x height; defaults to ``$SEETHROUGH_MAX_PIXELS`` or
            :data:`DEFAULT_MAX_PIXELS`. Checked from the header before decoding.

    Raises:
        ImageTooLargeError: the image has more pixels than ``max_pixels``.
        InvalidImageError: the source is missing, unreadable, not an image, corrupt, or an array
            of unsupported shape / dtype / range.
    """
    limit = _max_pixels(max_pixels)
    if isinstance(source, str) and source.startswith(SAMPLE_PREFIX):
        return sample_image(source[len(SAMPLE_PREFIX) :])
    if isinstance(source, (str, os.PathLike)):
        return _open_path(Path(source), limit)
    if isinstance(source, (bytes, bytearray)):
        return _decode(io.BytesIO(source), "<bytes>", limit)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_size("<array>", source.shape[1], source.shape[0], limit)
        return _array_to_image(source)
    if isinstance(source, Image.Image):
        return _finish(source, "<PIL image>", limit)
    if hasattr(source, "read"):
        return _decode(source, str(getattr(source, "name", "<file object>")), limit)
    raise InvalidImageError(
        f"cannot read an image from a {type(source).__name__}: expected a path, bytes, a binary "
        "file, a PIL image or a numpy array"
    )


def to_array(image: ImageSource) -> np.ndarray:
    """Return ``image`` (anything :func:`load_image` accepts) as a uint8 HxWx3 numpy array."""
    return np.array(load_image(image), dtype=np.uint8)


def is_raw_image(obj: object) -> bool:
    """Return True if ``obj`` is something :func:`load_image` reads (not a tensor)."""
    return isinstance(obj, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)) or (
        hasattr(obj, "read") and callable(obj.read)
    )


def list_samples() -> list[str]:
    """Names of the bundled sample images (from ``skimage.data``), sorted."""
    return sorted(_SAMPLES)


def sample_image(name: str) -> Image.Image:
    """Return the bundled sample photo ``name`` as an RGB image.

    Raises:
        InvalidImageError: ``name`` is not a known sample (the message suggests close names).
    """
    if name not in _SAMPLES:
        raise InvalidImageError(
            f"unknown sample image '{name}'.{suggest(name, _SAMPLES)} "
            f"Available: {', '.join(list_samples())}"
        )
    from skimage import data  # imported lazily: only needed for samples

    array = getattr(data, name)()
    if isinstance(array, tuple):  # stereo pairs: keep the left image
        array = array[0]
    return _array_to_image(np.asarray(array), f"{SAMPLE_PREFIX}{name}")
