"""Images with ground-truth masks, read from a folder in one of two layouts.

- simple: ``images/NAME.EXT`` and ``masks/NAME.png`` (same stem; any non-zero pixel is the
  object), with an optional ``labels.csv`` (``name,label``; the label is a class index or a class
  name of the model);
- Pascal VOC: ``JPEGImages/NAME.jpg``, ``SegmentationClass/NAME.png`` (palette indices: 0 is the
  background, 255 the "void" border, which counts as background) and
  ``ImageSets/Segmentation/{train,val,trainval}.txt``; every object class forms the mask. The
  class map is kept (:attr:`Sample.classes`, classes named by :data:`VOC_CLASSES`), and the
  instance map of ``SegmentationObject/NAME.png`` where there is one (:attr:`Sample.instances`):
  a segmenter is evaluated per class present, a detector per object (:func:`objects`).

Samples load lazily, one at a time, so a data set of any size costs the memory of one image.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidImageError, InvalidParameterError
from ..images import load_image

__all__ = [
    "Sample",
    "GroundTruth",
    "FolderDataset",
    "load_folder",
    "objects",
    "class_masks",
    "IMAGE_SUFFIXES",
    "VOC_CLASSES",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
VOC_VOID = 255
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""Pascal VOC's classes by palette index of ``SegmentationClass`` (255: void)."""


@dataclass
class Sample:
    """One image with its object mask.

    Attributes:
        name: identifier (file stem).
        image: RGB uint8 ``(H, W, 3)``.
        mask: boolean ``(H, W)``, True on the object, at the image's size.
        label: the ground-truth class (index or name) when the data set has one.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    label: int | str | None = None
    classes: np.ndarray | None = None
    instances: np.ndarray | None = None
    class_names: Sequence[str] | None = None


@dataclass
class GroundTruth:
    """One object or class of a sample, as a region of the image.

    Attributes:
        label: its class, as a name (VOC) or as the sample's label (``None``: unknown).
        mask: boolean ``(H, W)`` at the image's size: the instance's or the class's pixels.
    """

    label: int | str | None
    mask: np.ndarray


def class_masks(sample: Sample) -> list[GroundTruth]:
    """Each class present in ``sample`` with its pixels, in class order; without a class map,
    the mask with the sample's label."""
    if sample.classes is None:
        return [GroundTruth(sample.label, sample.mask)]
    names = sample.class_names or VOC_CLASSES
    found = []
    for c in np.unique(sample.classes):
        if c == 0 or c == VOC_VOID:
            continue
        label = names[c] if c < len(names) else int(c)
        found.append(GroundTruth(label, sample.classes == c))
    return found


def objects(sample: Sample) -> list[GroundTruth]:
    """Each object of ``sample`` with its pixels: the instances of the instance map (each
    with the class most of its pixels have), else the connected regions of each class (of the
    mask, without a class map)."""
    from scipy import ndimage

    found = []
    if sample.instances is not None and sample.classes is not None:
        names = sample.class_names or VOC_CLASSES
        for k in np.unique(sample.instances):
            if k == 0 or k == VOC_VOID:
                continue
            pixels = sample.instances == k
            values = sample.classes[pixels]
            values = values[(values != 0) & (values != VOC_VOID)]
            if values.size == 0:
                continue
            c = int(np.bincount(values).argmax())
            found.append(GroundTruth(names[c] if c < len(names) else c, pixels))
        return found
    for region in class_masks(sample):
        parts, count = ndimage.label(region.mask)
        found += [GroundTruth(region.label, parts == i) for i in range(1, count + 1)]
    return found


class FolderDataset(Sequence[Sample]):
    """A data set on disk (see the module docstring); indexing reads one sample."""

    def __init__(
        self,
        root: Path,
        layout: str,
        items: list[tuple[str, Path, Path]],
        labels: dict[str, int | str],
    ) -> None:
        self.root, self.layout, self.items, self.labels = root, layout, items, labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        name, image_path, mask_path = self.items[i]
        image = np.asarray(load_image(image_path))
        raw = _read_raw(mask_path)
        mask = _as_mask(raw, self.layout)
        classes = instances = None
        if self.layout == "voc":
            classes = raw
            objects = self.root / "SegmentationObject" / mask_path.name
            if objects.is_file():
                instances = _read_raw(objects)
                _check_size(instances, image, objects, image_path)
        _check_size(mask, image, mask_path, image_path)
        return Sample(name, image, mask, self.labels.get(name), classes, instances)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, layout={self.layout!r}, samples={len(self)})"


def _check_size(mask: np.ndarray, image: np.ndarray, mask_path: Path, image_path: Path) -> None:
    if mask.shape != image.shape[:2]:
        raise InvalidImageError(
            f"mask {mask_path.name} is {mask.shape[1]}x{mask.shape[0]} but image "
            f"{image_path.name} is {image.shape[1]}x{image.shape[0]}"
        )


def _read_raw(path: Path) -> np.ndarray:
    """A mask's pixel values (palette indices for a palette image, else grey levels)."""
    try:
        with Image.open(path) as im:
            return np.array(im if im.mode in ("P", "L", "1") else im.convert("L"))
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"cannot read mask {path.name}: {exc}") from None


def _as_mask(raw: np.ndarray, layout: str) -> np.ndarray:
    if layout == "voc":
        return (raw != 0) & (raw != VOC_VOID)
    return raw != 0


def _read_labels(path: Path) -> dict[str, int | str]:
    labels: dict[str, int | str] = {}
    if not path.is_file():
        return labels
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[0].strip().lower() == "name":
                continue
            value = row[1].strip()
            labels[Path(row[0].strip()).stem] = int(value) if value.lstrip("-").isdigit() else value
    return labels


def _by_stem(directory: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(directory.iterdir())
        if p.suffix.lower() in suffixes and p.is_file()
    }


def load_folder(
    root: str | Path, *, split: str | None = None, limit: int | None = None
) -> FolderDataset:
    """Open a data set folder; the layout is recognised from its sub-folders.

    Args:
        root: the folder (see the module docstring for the two layouts).
        split: for VOC, the image set to read (``train``, ``val``, ...; default ``val`` when
            present, else every image with a segmentation mask).
        limit: keep at most this many samples (the first ones, in name order).

    Raises:
        InvalidParameterError: no known layout, no image with a mask, or an unknown split.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidParameterError(f"data folder '{root}' does not exist")
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        layout = "voc"
        images = _by_stem(root / "JPEGImages", IMAGE_SUFFIXES)
        masks = _by_stem(root / "SegmentationClass", (".png",))
        sets = root / "ImageSets" / "Segmentation"
        split = split or ("val" if (sets / "val.txt").is_file() else None)
        if split is not None:
            listing = sets / f"{split}.txt"
            if not listing.is_file():
                known = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
                raise InvalidParameterError(
                    f"no image set '{split}' in {sets}"
                    + (f": use one of {', '.join(known)}" if known else "")
                )
            names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        else:
            names = sorted(masks)
        labels: dict[str, int | str] = {}
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        layout = "simple"
        images = _by_stem(root / "images", IMAGE_SUFFIXES)
        masks = _by_stem(root / "masks", IMAGE_SUFFIXES)
        names = sorted(images)
        labels = _read_labels(root / "labels.csv")
    else:
        raise InvalidParameterError(
            f"'{root}' is not a data set folder: expected images/ and masks/ (optionally "
            "labels.csv), or the Pascal VOC layout (JPEGImages/, SegmentationClass/, ImageSets/)"
        )
    items = [(n, images[n], masks[n]) for n in names if n in images and n in masks]
    if not items:
        raise InvalidParameterError(f"no image in '{root}' has a mask with the same name")
    if limit is not None:
        if limit < 1:
            raise InvalidParameterError(f"limit={limit}: must be >= 1")
        items = items[:limit]
    return FolderDataset(root, layout, items, labels)
