"""The result of one explanation, with save/load and a versioned manifest."""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_atomically, write_text_atomically
from ._version import __version__
from .errors import InvalidParameterError

__all__ = ["Explanation", "Region", "MANIFEST_FORMAT", "MANIFEST_VERSION", "library_versions"]

MANIFEST_FORMAT = "seethrough.explanation"
MANIFEST_VERSION = 1
_ARRAYS = ("raw", "map", "image")
_REGION_PIXELS = "region_pixels"


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape a result, for manifests."""
    versions = {"python": platform.python_version(), "seethrough": __version__}
    for dist in ("torch", "torchvision", "timm", "numpy", "scikit-image"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass(frozen=True)
class Region:
    """What an explanation of a detector's box or a segmenter's class mask explains.

    Attributes:
        kind: ``"box"`` or ``"mask"``.
        target: the class index of the box or the mask.
        label: its class label, if the model has labels.
        box: the box's corners ``(x0, y0, x1, y1)`` in pixels of the image the model saw (the
            reference box of a :class:`~seethrough.targets.Box`), for a box.
        pixels: the boolean ``(H, W)`` region whose logits a :class:`~seethrough.targets.Mask`
            averages, at the model input's size, for a mask.
    """

    kind: str
    target: int
    label: str | None = None
    box: tuple[float, float, float, float] | None = None
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """One line: ``box dog (10.0, 20.0, 200.0, 300.0)`` or ``mask dog, 1234 pixels``."""
        what = self.label if self.label is not None else f"class {self.target}"
        if self.kind == "box" and self.box is not None:
            return f"box {what} (" + ", ".join(f"{v:.1f}" for v in self.box) + ")"
        count = "" if self.pixels is None else f", {int(np.count_nonzero(self.pixels))} pixels"
        return f"mask {what}{count}"

    def manifest(self) -> dict[str, Any]:
        """JSON-ready: everything but the pixels (saved with the arrays)."""
        return {
            "kind": self.kind,
            "target": self.target,
            "label": self.label,
            "box": None if self.box is None else [float(v) for v in self.box],
            "pixels": self.pixels is not None,
        }

    @classmethod
    def from_manifest(cls, data: dict[str, Any], pixels: np.ndarray | None) -> Region:
        """The region :meth:`manifest` wrote, with its pixels from the arrays."""
        box = data.get("box")
        return cls(
            kind=str(data["kind"]),
            target=int(data["target"]),
            label=data.get("label"),
            box=None if box is None else tuple(float(v) for v in box),  # type: ignore[arg-type]
            pixels=None if pixels is None else np.asarray(pixels, dtype=bool),
        )


@dataclass
class Explanation:
    """One map explaining one target of one image.

    Attributes:
        raw: the signed, un-normalised map at the method's resolution (the layer's, for CAMs),
            float32 ``(h, w)``.
        map: the map at the model-input resolution as the method defines it for display (for
            CAMs: ReLU of ``raw``, upsampled bilinearly), float32 ``(H, W)``.
        method: registry name of the method.
        target: explained class index (``None`` for a custom callable target).
        label: class label of ``target``, if the model has labels.
        score: the target's score (e.g. the logit) on the unperturbed input.
        probability: softmax probability of ``target``, when it is a class.
        layer: layer name used, if any.
        params: the method's parameters in effect.
        seconds: wall time spent on this image (a batch's time divided by its size).
        model: model name, if known.
        image: the image the model saw, uint8 ``(H, W, 3)`` (after resize/crop), if known.
        preprocessing: description of the preprocessing applied, if any.
        seed: random seed used, for stochastic methods.
        extras: further arrays a method family adds (``segments``, ``weights``,
            ``attributions``, ...).
        stats: scalars a method reports about its own result (``r2`` of LIME's local fit,
            ``base_value`` of Kernel SHAP, ...).
        created: UTC time stamp, ISO 8601.
        title: display name of the method (e.g. "Grad-CAM"); the method's name when not given.
        region: the box or class mask explained (:class:`Region`), for a detector's or a
            segmenter's target; ``None`` for a class.
    """

    raw: np.ndarray
    map: np.ndarray
    method: str
    target: int | None = None
    label: str | None = None
    score: float = float("nan")
    probability: float | None = None
    layer: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    model: str | None = None
    image: np.ndarray | None = None
    preprocessing: str | None = None
    seed: int | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    title: str = ""
    region: Region | None = None

    def __post_init__(self) -> None:
        if not self.title:
            self.title = self.method

    def caption(self) -> str:
        """Three short lines: method, explained class with probability (or the box or mask
        explained), seconds."""
        what = (
            self.label
            if self.label is not None
            else (f"class {self.target}" if self.target is not None else "custom target")
        )
        if self.region is not None:
            what = f"{self.region.kind} {what}"
        prob = f" {self.probability:.2f}" if self.probability is not None else ""
        return f"{self.title}\n{what}{prob}\n{self.seconds:.3f} s"

    def describe(self, mask: Any = None, hide_top: Any = None) -> str:
        """A short, deterministic text: what is explained and how sure the model is, where the
        positive evidence lies (named cells of a 3x3 grid), how concentrated it is, the share
        inside ``mask`` or the explained box or class mask, what hiding the top pixels did
        (``hide_top``), DFF's concepts. Every number in it is one
        :func:`seethrough.describe.describe` computed (its ``facts``).

        Args:
            mask: a boolean ``(H, W)`` mask of :attr:`map`'s shape, or a box ``(x0, y0, x1, y1)``
                in its pixels.
            hide_top: a :func:`~seethrough.metrics.hide_top` result (or a sweep's list) computed
                on this map; the model is not run here.
        """
        from .describe import describe

        return describe(self, mask=mask, hide_top=hide_top).text

    def overlay(self, *, cmap: str = "jet", alpha: float = 0.5, outline: bool = True) -> np.ndarray:
        """The map laid over :attr:`image` (uint8 HxWx3), with the outline of the explained box
        or mask (:attr:`region`) unless ``outline=False``; needs the image."""
        from .viz import draw_region, overlay

        if self.image is None:
            raise InvalidParameterError("this explanation holds no image to draw the map on")
        shown = overlay(self.image, self.map, cmap=cmap, alpha=alpha)
        if outline and self.region is not None:
            shown = draw_region(shown, self.region)
        return shown

    def manifest(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready, with format version and library versions."""
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "method": self.method,
            "title": self.title,
            "target": self.target,
            "label": self.label,
            "score": _finite_or_none(self.score),
            "probability": self.probability,
            "layer": self.layer,
            "params": _jsonable(self.params),
            "seconds": self.seconds,
            "model": self.model,
            "preprocessing": self.preprocessing,
            "seed": self.seed,
            "created": self.created,
            "shapes": {"raw": list(self.raw.shape), "map": list(self.map.shape)},
            "extras": sorted(self.extras),
            "stats": _jsonable(self.stats),
            "region": None if self.region is None else self.region.manifest(),
            "libraries": library_versions(),
        }

    def save(self, directory: str | Path, stem: str | None = None) -> dict[str, Path]:
        """Write ``STEM.npz`` (arrays), ``STEM.json`` (manifest) and, with an image, ``STEM.png``.

        Returns the written paths by kind ("npz", "json", "png"). ``stem`` defaults to the method
        name. Each file is written atomically (a temporary file renamed into place), the manifest
        last: an interrupted save leaves no partial file.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stem = _safe_stem(stem or self.method)
        paths = {"npz": out / f"{stem}.npz", "json": out / f"{stem}.json"}
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}
        arrays.update({f"extra_{k}": np.asarray(v) for k, v in self.extras.items()})
        if self.region is not None and self.region.pixels is not None:
            arrays[_REGION_PIXELS] = np.asarray(self.region.pixels, dtype=bool)
        write_atomically(paths["npz"], lambda p: np.savez_compressed(p, **arrays))
        manifest = self.manifest()
        manifest["files"] = {"arrays": paths["npz"].name}
        if self.image is not None:
            from .viz import save_png

            paths["png"] = out / f"{stem}.png"
            save_png(self.overlay(), paths["png"])
            manifest["files"]["overlay"] = paths["png"].name
        # the manifest last: its presence means the arrays and the overlay are complete
        write_text_atomically(paths["json"], json.dumps(manifest, indent=2))
        return paths

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an explanation written by :meth:`save`, from its ``.json`` or ``.npz`` path."""
        manifest, arrays = read_saved(
            path, MANIFEST_FORMAT, MANIFEST_VERSION, "explanation manifest"
        )
        fields = {
            k: manifest.get(k)
            for k in (
                "method",
                "title",
                "target",
                "label",
                "probability",
                "layer",
                "params",
                "seconds",
                "model",
                "preprocessing",
                "seed",
                "created",
                "stats",
            )
        }
        score = manifest.get("score")
        region = manifest.get("region")  # absent from manifests written before regions
        return cls(
            raw=arrays["raw"],
            map=arrays["map"],
            image=arrays.get("image"),
            score=float("nan") if score is None else float(score),
            extras={k[6:]: v for k, v in arrays.items() if k.startswith("extra_")},
            region=None if not region else Region.from_manifest(region, arrays.get(_REGION_PIXELS)),
            **{k: v for k, v in fields.items() if v is not None},
        )

    @property
    def segments(self) -> np.ndarray | None:
        """Integer label array ``(H, W)`` of the features a perturbation method used, if any."""
        return self.extras.get("segments")

    @property
    def weights(self) -> np.ndarray | None:
        """One value per segment or channel, for methods that produce them."""
        return self.extras.get("weights")

    @property
    def attributions(self) -> np.ndarray | None:
        """Full ``(C, H, W)`` attribution, for gradient methods."""
        return self.extras.get("attributions")


def read_saved(
    path: str | Path, fmt: str, version: int, what: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest (``STEM.json``) and arrays (its ``.npz``) a ``save`` wrote, from either
    path; ``fmt`` and ``version``: the manifest format and the newest version this reads,
    ``what``: the kind of file, for the message when it is another.

    Raises:
        InvalidParameterError: an unreadable manifest, another format or a newer version.
    """
    json_path = Path(path).with_suffix(".json")
    try:
        manifest = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(f"cannot read manifest {json_path}: {exc}") from None
    if manifest.get("format") != fmt:
        raise InvalidParameterError(f"{json_path} is not a seethrough {what}")
    if int(manifest.get("version", 0)) > version:
        raise InvalidParameterError(
            f"{json_path} has manifest version {manifest['version']}; this seethrough reads "
            f"up to {version}: upgrade seethrough"
        )
    npz = json_path.parent / manifest.get("files", {}).get("arrays", json_path.stem + ".npz")
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return manifest, arrays


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", stem) or "explanation"


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    return repr(value)
