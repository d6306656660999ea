"""What an audit looks at: a data source turned into a list of :class:`Item`.

Four sources are recognised by :func:`load_items`:

- a folder of images, read recursively (the suffixes of
  :data:`~seethrough.images.IMAGE_EXTENSIONS`); an item's id is its path relative to the folder;
- the images + masks layout and the Pascal VOC layout of
  :func:`~seethrough.evaluation.load_folder` (labels from ``labels.csv`` where there is one);
- a CSV file with a ``path`` column and optional ``label`` and ``mask`` columns (paths relative
  to the CSV's folder, or absolute); a row naming a missing file still becomes an item, whose
  rows carry the error, so that a wrong listing is seen in the table and not lost.

Items are listed in a fixed order (sorted, or the CSV's), then optionally shuffled with a seed and
cut to a limit: the same arguments always give the same items.

A video (the suffixes of :data:`~seethrough.video.VIDEO_EXTENSIONS`, with the ``video`` extra)
is one item per frame, id ``PATH#frame=INDEX`` (six digits, in frame order). Other frame sources
plug in through :func:`register_frames`: a function that expands a file into one item per frame
and one that reads a frame as an RGB array.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InvalidImageError, InvalidParameterError, SeethroughError
from ..evaluation import load_folder
from ..images import IMAGE_EXTENSIONS, load_image

__all__ = [
    "Item",
    "load_items",
    "read_image",
    "read_mask",
    "register_frames",
    "FrameExpander",
    "FrameReader",
]

FrameExpander = Callable[[Path, str], list["Item"]]
"""``expand(path, id)``: one :class:`Item` per frame of a video file (``frame`` set)."""
FrameReader = Callable[[Path, int], np.ndarray]
"""``read(path, frame)``: that frame as RGB uint8 ``(H, W, 3)``."""

_FRAMES: dict[str, tuple[FrameExpander, FrameReader]] = {}


@dataclass(frozen=True)
class Item:
    """One image (or one frame of a video) to audit.

    Attributes:
        id: stable identifier: the path relative to the data source (``#FRAME`` appended for a
            video frame); the key of the table's rows with the method.
        path: the file.
        label: the ground-truth class (an index or a class name) when the source has one.
        mask_path: the object's mask (non-zero pixels; VOC palette masks: not 0 and not 255).
        frame: the frame index of a video file, else ``None``.
    """

    id: str
    path: str
    label: int | str | None = None
    mask_path: str | None = None
    frame: int | None = None


def register_frames(suffixes: Sequence[str], expand: FrameExpander, read: FrameReader) -> None:
    """Let folders and CSV files hold videos: files with these suffixes are expanded into
    frames by ``expand`` and read by ``read``.

    Args:
        suffixes: file suffixes, lower case with the dot (``".mp4"``).
        expand: ``expand(path, id)`` gives the file's frames as items (see :data:`FrameExpander`).
        read: ``read(path, frame)`` gives one frame (see :data:`FrameReader`).
    """
    for suffix in suffixes:
        _FRAMES[suffix.lower()] = (expand, read)


class _VideoCursor:
    """Reads frames of one clip in increasing order with one decoder (a batch of consecutive
    frames decodes the clip once, not once per frame); another clip, or an earlier frame,
    opens the file again."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.stream: Iterator[Any] | None = None
        self.index = -1

    def read(self, path: Path, frame: int) -> np.ndarray:
        from ..video import frames

        if path != self.path or frame <= self.index or self.stream is None:
            self.path, self.stream, self.index = path, iter(frames(path, max_pixels=None)), -1
        for f in self.stream:
            self.index = f.index
            if f.index == frame:
                return np.asarray(f.image)
        self.stream = None
        raise InvalidImageError(f"video '{path.name}' has no frame {frame}")


def _video_frames(path: Path, item_id: str) -> list[Item]:
    """One item per frame of a clip (its header and every frame checked by decoding); a clip
    that cannot be read is one item whose rows carry the error."""
    from ..video import frames

    try:
        indices = [f.index for f in frames(path)]
    except SeethroughError:
        return [Item(f"{item_id}#frame=000000", str(path), frame=0)]
    return [Item(f"{item_id}#frame={i:06d}", str(path), frame=i) for i in indices]


def _register_videos() -> None:
    from ..video import VIDEO_EXTENSIONS

    cursor = _VideoCursor()
    register_frames([f".{e}" for e in VIDEO_EXTENSIONS], _video_frames, cursor.read)


def _label(text: str) -> int | str | None:
    text = text.strip()
    if not text:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _expand(path: Path, item_id: str, **kw: object) -> list[Item]:
    frames = _FRAMES.get(path.suffix.lower())
    if frames is None or not path.is_file():
        return [Item(item_id, str(path), **kw)]  # type: ignore[arg-type]
    return frames[0](path, item_id)


_register_videos()


def _from_folder(root: Path) -> list[Item]:
    suffixes = {f".{e}" for e in IMAGE_EXTENSIONS} | set(_FRAMES)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    items: list[Item] = []
    for p in files:
        items += _expand(p, p.relative_to(root).as_posix())
    return items


def _from_layout(root: Path) -> list[Item]:
    data = load_folder(root)
    return [
        Item(
            image.relative_to(root).as_posix(),
            str(image),
            data.labels.get(name),
            str(mask),
        )
        for name, image, mask in data.items
    ]


def _from_csv(path: Path) -> list[Item]:
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in fields:
                raise InvalidParameterError(
                    f"{path.name}: a CSV source needs a 'path' column (optional: label, mask); "
                    f"found {', '.join(fields) or 'no header'}"
                )
            rows = [{k.strip().lower(): (v or "") for k, v in r.items() if k} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidParameterError(f"cannot read {path}: {exc}") from None
    items: list[Item] = []
    seen: set[str] = set()
    for row in rows:
        given = row["path"].strip()
        if not given:
            continue
        file = (base / given).resolve()
        item_id = Path(given).as_posix()
        if item_id in seen:
            raise InvalidParameterError(f"{path.name}: '{given}' is listed twice")
        seen.add(item_id)
        mask = row.get("mask", "").strip()
        items += _expand(
            file,
            item_id,
            label=_label(row.get("label", "")),
            mask_path=str((base / mask).resolve()) if mask else None,
        )
    return items


def load_items(
    source: str | Path,
    *,
    limit: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> list[Item]:
    """The items of a data source (see the module docstring), in a deterministic order.

    Args:
        source: a folder (plain, images + masks, or Pascal VOC) or a ``.csv`` file.
        limit: keep the first ``limit`` items (after shuffling).
        shuffle: shuffle the items with ``seed`` (the same seed, the same order).
        seed: the shuffle's seed.

    Returns:
        The items.

    Raises:
        InvalidParameterError: the source does not exist, is an unreadable CSV or holds no
            image; ``limit`` is below 1.
    """
    path = Path(source)
    if limit is not None and limit < 1:
        raise InvalidParameterError(f"limit={limit}: must be >= 1")
    if path.is_file() and path.suffix.lower() == ".csv":
        items = _from_csv(path)
    elif path.is_dir():
        layouts = ("images", "masks"), ("JPEGImages", "SegmentationClass")
        if any(all((path / d).is_dir() for d in pair) for pair in layouts):
            items = _from_layout(path)
        else:
            items = _from_folder(path)
    else:
        raise InvalidParameterError(
            f"data source '{source}' is neither a folder nor a .csv file"
            + ("" if path.exists() else " (it does not exist)")
        )
    if not items:
        raise InvalidParameterError(f"no image found in '{source}'")
    if shuffle:
        random.Random(seed).shuffle(items)
    return items[:limit] if limit is not None else items


def read_image(item: Item, max_pixels: int | None = None) -> Image.Image:
    """The item's image (its frame, for a video), RGB.

    Raises:
        InvalidImageError: missing, unreadable, corrupt, not an image, too large.
    """
    if item.frame is None:
        return load_image(item.path, max_pixels=max_pixels)
    reader = _FRAMES.get(Path(item.path).suffix.lower())
    if reader is None:
        raise InvalidImageError(f"{item.id}: no frame reader for {Path(item.path).suffix} files")
    return load_image(reader[1](Path(item.path), item.frame), max_pixels=max_pixels)


def read_mask(item: Item, size: tuple[int, int]) -> np.ndarray | None:
    """The item's object mask, boolean ``(H, W)`` at the image's ``size`` (width, height);
    ``None`` without one.

    A palette mask (Pascal VOC) counts palette index 0 and 255 (void) as background; any other
    mask, its non-zero pixels as the object.

    Raises:
        InvalidImageError: the mask cannot be read or its size differs from the image's.
    """
    if item.mask_path is None:
        return None
    path = Path(item.mask_path)
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                raw = np.array(im)
                mask = (raw != 0) & (raw != 255)
            else:
                mask = np.array(im.convert("L")) != 0
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"cannot read mask {path.name}: {exc}") from None
    if mask.shape != (size[1], size[0]):
        raise InvalidImageError(
            f"mask {path.name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{size[0]}x{size[1]}"
        )
    return mask
