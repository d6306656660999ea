"""Videos: read frames safely, explain a clip frame by frame, write an overlay video.

Needs the ``video`` extra (``pip install 'seethrough[video]'``: PyAV, whose wheels carry FFmpeg);
PyAV is imported on first use, and a missing one is a
:class:`~seethrough.errors.MissingDependencyError` that names the pip command.

Decoding only: a video file is opened by FFmpeg's demuxers and decoders, nothing in it runs as
code. The same guards as for images apply: a frame larger than the images' pixel limit
(:data:`~seethrough.images.DEFAULT_MAX_PIXELS`, ``SEETHROUGH_MAX_PIXELS``) is refused before its
pixels are decoded, so is a clip longer than ``max_seconds``; ``max_frames`` bounds the frames
kept. A file that is not a video, or a corrupt one, is an
:class:`~seethrough.errors.InvalidImageError` with a one-line message naming the file.

:func:`explain_video` explains every kept frame with :func:`seethrough.explain` (several frames
per call), optionally smooths the maps over time (an exponential moving average, see
:func:`smooth_maps`) and writes, atomically, ``STEM.mp4`` (the maps laid over the frames the
model sees), ``STEM.npz`` (the per-frame maps, frame indices and times) and ``STEM.json`` (the
manifest, written last). :func:`video_items` gives a clip as a list of ``(frame_id, frame)``
pairs, for tools that work on images (a data-set audit).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from ._io import write_atomically, write_text_atomically
from .api import explain
from .core.progress import Ticker
from .core.targets import TargetLike
from .errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    MissingDependencyError,
)
from .explanation import Explanation, library_versions
from .images import MAX_PIXELS_ENV, _max_pixels
from .models import VisionModel
from .viz import overlay

__all__ = [
    "VIDEO_EXTENSIONS",
    "DEFAULT_MAX_SECONDS",
    "VideoFrame",
    "VideoInfo",
    "VideoExplanation",
    "is_video",
    "video_info",
    "check_video",
    "frames",
    "FrameStream",
    "video_items",
    "smooth_maps",
    "write_video",
    "explain_video",
]

VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "avi", "mov", "mkv", "webm")
"""File extensions (lower case, without the dot) read as videos by the command line and the
dashboard."""

DEFAULT_MAX_SECONDS = 600.0
"""Longest clip read by default (seconds); longer ones are refused (pass ``max_seconds=``)."""

MANIFEST_FORMAT = "seethrough.video"
MANIFEST_VERSION = 1
CODECS = ("libx264", "mpeg4")
"""Encoders of the overlay video, first available first: H.264 plays in every browser."""


def _av() -> Any:
    """PyAV, imported on first use; a missing one names the extra to install."""
    try:
        import av
    except ImportError:
        raise MissingDependencyError(
            "reading videos needs PyAV: pip install 'seethrough[video]'"
        ) from None
    return av


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a video suffix (:data:`VIDEO_EXTENSIONS`); the file is not opened."""
    return Path(path).suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


class VideoFrame(NamedTuple):
    """One decoded frame: its index in the clip (from 0, every frame counted), its time in
    seconds from the start, and its pixels as an RGB ``uint8`` array ``(H, W, 3)``."""

    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What a clip's header says: frame size, frame rate, frame count and duration (``None``
    where the container does not say), and the codec's name."""

    width: int
    height: int
    fps: float
    frames: int | None
    seconds: float | None
    codec: str


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the errno and the path (the message names the file already)."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    return text or type(exc).__name__


def _decode_errors(av: Any) -> tuple[type[BaseException], ...]:
    return (av.FFmpegError, OSError, ValueError, EOFError)


def _open(path: Path, av: Any) -> Any:
    """The opened container; a missing file or one FFmpeg cannot read is ``InvalidImageError``."""
    if not path.is_file():
        raise InvalidImageError(f"video '{path}': no such file")
    try:
        container = av.open(str(path), mode="r")
    except _decode_errors(av) as exc:
        raise InvalidImageError(f"video '{path}' cannot be read: {_reason(exc)}") from None
    if not container.streams.video:
        container.close()
        raise InvalidImageError(f"'{path}' holds no video stream")
    return container


def _info(container: Any, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000
    if not ctx.width or not ctx.height:
        raise InvalidImageError(f"video '{path}' has no frame size in its header")
    return VideoInfo(
        width=int(ctx.width),
        height=int(ctx.height),
        fps=float(rate) if rate else 0.0,
        frames=int(stream.frames) or None,
        seconds=seconds,
        codec=str(ctx.name),
    )


def _check_limits(info: VideoInfo, path: Path, limit: int, max_seconds: float) -> None:
    if info.width * info.height > limit:
        raise ImageTooLargeError(
            f"video '{path}' has frames of {info.width}x{info.height} = "
            f"{info.width * info.height:,} pixels, more than the limit of {limit:,} (raise it "
            f"with max_pixels= or {MAX_PIXELS_ENV})",
            size=(info.width, info.height),
            limit=limit,
        )
    if info.seconds is not None and info.seconds > max_seconds:
        raise InvalidImageError(
            f"video '{path}' lasts {info.seconds:.1f} s, more than the limit of {max_seconds:g} s "
            "(raise it with max_seconds=)"
        )


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a clip's header (no frame is decoded).

    Raises:
        InvalidImageError: a missing file, one that is not a video, or one without a video stream.
        MissingDependencyError: PyAV is not installed.
    """
    av = _av()
    path = Path(path)
    container = _open(path, av)
    try:
        return _info(container, path)
    finally:
        container.close()


def check_video(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> VideoInfo:
    """Read a clip's header and check it against the limits of :func:`frames` (no frame is
    decoded): for a front end that takes an upload and explains it later.

    Raises:
        InvalidImageError: not a video, or over the limits
            (:class:`~seethrough.errors.ImageTooLargeError` for the frame size).
        MissingDependencyError: PyAV is not installed.
    """
    limit = _max_pixels(max_pixels)
    info = video_info(path)
    _check_limits(info, Path(path), limit, float(max_seconds))
    return info


def _check_count(value: int | None, name: str, least: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidParameterError(f"{name} must be an integer >= {least}, got {value!r}")


class FrameStream(Iterator[VideoFrame]):
    """The frames of an open clip, decoded one at a time (what :func:`frames` returns).

    ``info`` is the clip's header (:class:`VideoInfo`). The file is closed when the frames run
    out, on an error, by :meth:`close`, or at the end of a ``with`` block, also when not every
    frame was read.
    """

    def __init__(self, container: Any, frames: Iterator[VideoFrame], info: VideoInfo) -> None:
        self.info = info
        self._container = container
        self._frames = frames

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> VideoFrame:
        return next(self._frames)

    def close(self) -> None:
        """Stop decoding and close the file."""
        self._frames.close()  # type: ignore[attr-defined]
        self._container.close()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def frames(
    path: str | os.PathLike[str],
    stride: int = 1,
    max_frames: int | None = None,
    *,
    max_pixels: int | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> FrameStream:
    """Decode a clip's frames one at a time, keeping every ``stride``-th (frames 0, stride, ...).

    The file is opened and its header checked when this function is called, so a bad file
    fails here, not at the first frame; frames are then decoded lazily.

    Args:
        path: the video file.
        stride: keep one frame in ``stride`` (``1``: every frame).
        max_frames: stop after this many kept frames (``None``: all).
        max_pixels: the largest frame (width x height); default the images' limit
            (``SEETHROUGH_MAX_PIXELS`` or :data:`~seethrough.images.DEFAULT_MAX_PIXELS`).
        max_seconds: the longest clip, checked from the header and again from the frames'
            times while decoding (a header need not tell the truth).

    Returns:
        A :class:`FrameStream`, an iterator of :class:`VideoFrame` ``(index, time, image)``: ``index`` counts every
        decoded frame from 0, ``time`` is the frame's presentation time in seconds (its index
        over the frame rate when the stream gives none), ``image`` RGB ``uint8`` ``(H, W, 3)``.

    Raises:
        InvalidImageError: not a video, a corrupt or truncated one, or one over the limits
            (:class:`~seethrough.errors.ImageTooLargeError` for the frame size). Errors met
            while decoding are raised by the iterator.
        InvalidParameterError: a bad stride or limit.
        MissingDependencyError: PyAV is not installed.
    """
    _check_count(stride, "stride", 1)
    _check_count(max_frames, "max_frames", 1)
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)):
        raise InvalidParameterError(f"max_seconds must be a number, got {max_seconds!r}")
    if not max_seconds > 0:
        raise InvalidParameterError(f"max_seconds must be > 0, got {max_seconds!r}")
    limit = _max_pixels(max_pixels)
    av = _av()
    path = Path(path)
    container = _open(path, av)
    try:
        info = _info(container, path)
        _check_limits(info, path, limit, float(max_seconds))
    except BaseException:
        container.close()
        raise
    decoded = _decode(container, path, info, stride, max_frames, limit, float(max_seconds), av)
    return FrameStream(container, decoded, info)


def _decode(
    container: Any,
    path: Path,
    info: VideoInfo,
    stride: int,
    max_frames: int | None,
    limit: int,
    max_seconds: float,
    av: Any,
) -> Iterator[VideoFrame]:
    kept = 0
    index = -1
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                index += 1
                if frame.width * frame.height > limit:  # the size may change mid-stream
                    _check_limits(
                        VideoInfo(frame.width, frame.height, info.fps, None, None, info.codec),
                        path,
                        limit,
                        max_seconds,
                    )
                t = float(frame.time) if frame.time is not None else index / (info.fps or 1.0)
                if t > max_seconds:
                    raise InvalidImageError(
                        f"video '{path}' runs past the limit of {max_seconds:g} s "
                        "(raise it with max_seconds=)"
                    )
                if index % stride:
                    continue
                yield VideoFrame(index, t, frame.to_ndarray(format="rgb24"))
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
        except _decode_errors(av) as exc:
            raise InvalidImageError(
                f"video '{path}' is corrupt or truncated at frame {index + 1}: {_reason(exc)}"
            ) from None
        if index < 0:
            raise InvalidImageError(f"video '{path}' holds no decodable frame")
    finally:
        container.close()


def video_items(
    path: str | os.PathLike[str],
    stride: int = 1,
    max_frames: int | None = None,
    **limits: Any,
) -> list[tuple[str, np.ndarray]]:
    """A clip as a list of ``(frame_id, image)`` pairs: the hook that lets a tool made for
    images (a data-set audit, a metric loop) treat a video as a sequence of frames.

    ``frame_id`` is ``"NAME#frame=INDEX"`` (``NAME`` the file name, ``INDEX`` the frame's index
    in the clip, zero-padded to six digits), unique within a folder and sorting in frame order;
    ``image`` is RGB ``uint8`` ``(H, W, 3)``. Every kept frame is held in memory: use
    ``stride`` and ``max_frames`` on long clips, or :func:`frames` to stream.

    Args:
        path: the video file.
        stride: keep one frame in ``stride``.
        max_frames: keep at most this many frames.
        **limits: ``max_pixels=`` and ``max_seconds=``, as for :func:`frames`.

    Returns:
        The kept frames, in order.

    Raises:
        InvalidImageError: not a video, corrupt, or over the limits (see :func:`frames`).
    """
    name = Path(path).name
    return [
        (f"{name}#frame={f.index:06d}", f.image) for f in frames(path, stride, max_frames, **limits)
    ]


def _check_weight(smooth: float) -> float:
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)):
        raise InvalidParameterError(f"smooth must be a number in [0, 1), got {smooth!r}")
    if not 0.0 <= smooth < 1.0:
        raise InvalidParameterError(f"smooth must lie in [0, 1), got {smooth!r}")
    return float(smooth)


class _Smoother:
    """The running exponential moving average of :func:`smooth_maps`, one map at a time."""

    def __init__(self, weight: float) -> None:
        self.weight = _check_weight(weight)
        self.state: np.ndarray | None = None

    def __call__(self, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        if self.state is None or self.weight == 0.0:
            self.state = m
        else:
            self.state = self.weight * self.state + (1.0 - self.weight) * m
        return self.state


def smooth_maps(maps: Sequence[np.ndarray] | np.ndarray, smooth: float) -> np.ndarray:
    """Smooth a sequence of maps over time with an exponential moving average.

    ``s_0 = m_0`` and ``s_t = w * s_{t-1} + (1 - w) * m_t`` with ``w = smooth``: each smoothed
    map is ``w^t m_0 + (1 - w) * sum_{1<=k<=t} w^(t-k) m_k`` (the first map keeps the weight
    the others leave, so a constant sequence stays constant). ``w = 0`` returns the maps as they are; a
    larger ``w`` steadies the map against frame-to-frame noise and lags it behind motion by
    about ``w / (1 - w)`` kept frames.

    Args:
        maps: ``T`` maps of one shape, in time order (``(T, H, W)``).
        smooth: the weight ``w`` of the past, in ``[0, 1)``.

    Returns:
        The smoothed maps, float64, of the input's shape.

    Raises:
        InvalidParameterError: a weight outside ``[0, 1)``, or maps of different shapes.
    """
    step = _Smoother(smooth)
    try:
        stack = np.asarray(maps, dtype=np.float64)
    except ValueError:
        raise InvalidParameterError("the maps to smooth must all have one shape") from None
    return np.stack([step(m) for m in stack]) if len(stack) else stack


def _codec(av: Any) -> str:
    for name in CODECS:
        if name in av.codecs_available:
            return name
    raise MissingDependencyError(
        f"this PyAV build has none of the video encoders {', '.join(CODECS)}"
    )


def _rate(fps: float) -> Fraction:
    if not (isinstance(fps, (int, float, Fraction)) and math.isfinite(fps) and fps > 0):
        raise InvalidParameterError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _even(image: np.ndarray) -> np.ndarray:
    """The image padded by its last row / column to an even size (4:2:0 encoders need one)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class _Writer:
    """An open encoder writing RGB frames to a file (the temporary file of an atomic write)."""

    def __init__(self, path: Path, fps: float, av: Any) -> None:
        self.av = av
        self.container = av.open(str(path), mode="w", format="mp4")
        self.codec = _codec(av)
        self.stream = self.container.add_stream(self.codec, rate=_rate(fps))
        self.stream.pix_fmt = "yuv420p"
        self.size: tuple[int, int] | None = None

    def write(self, image: np.ndarray) -> None:
        image = _even(np.ascontiguousarray(image, dtype=np.uint8))
        h, w = image.shape[:2]
        if self.size is None:
            self.size = (w, h)
            self.stream.width, self.stream.height = w, h
        elif self.size != (w, h):
            raise InvalidParameterError(
                f"the frames of a video must have one size: {w}x{h} after {self.size[0]}x"
                f"{self.size[1]}"
            )
        frame = self.av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            if self.size is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()


def write_video(
    path: str | os.PathLike[str], images: Sequence[np.ndarray] | Iterator[np.ndarray], fps: float
) -> Path:
    """Encode RGB ``uint8`` frames ``(H, W, 3)`` of one size to an MP4 file, atomically.

    The encoder is the first of :data:`CODECS` the PyAV build has (H.264 in the PyPI wheels),
    in ``yuv420p``; a frame of odd width or height is padded by repeating its last column or
    row (4:2:0 needs even sizes).

    Args:
        path: the ``.mp4`` file to write (its folder must exist).
        images: the frames, in order.
        fps: the frame rate of the written video.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    av = _av()
    _rate(fps)

    def write(tmp: Path) -> None:
        writer = _Writer(tmp, fps, av)
        try:
            for image in images:
                writer.write(image)
        finally:
            writer.close()
        if writer.size is None:
            raise InvalidParameterError("no frame to write")

    return write_atomically(path, write)


@dataclass
class VideoExplanation:
    """The explanation of a clip, frame by frame.

    Attributes:
        maps: ``(T, H, W)`` float32, each kept frame's map at the model input's size, as the
            method gave it (not smoothed).
        smoothed: ``(T, H, W)`` float32, the maps after temporal smoothing (the ones drawn in
            the overlay video); the same as ``maps`` when ``smooth=0``.
        indices: ``(T,)`` each kept frame's index in the clip.
        times: ``(T,)`` each kept frame's time in seconds.
        targets: ``(T,)`` the class explained in each frame.
        labels: each frame's class label (``None`` without labels).
        scores: ``(T,)`` the model's score of that class in each frame.
        method: the method's registry name.
        model: the model's name.
        params: the method's parameters as it ran.
        stride: one frame in ``stride`` was kept.
        smooth: the smoothing weight ``w``.
        fps: the frame rate of the overlay video (the clip's over ``stride``).
        source: the clip's path.
        files: the written files by kind (``video``, ``arrays``, ``manifest``), when ``out``
            was given.
    """

    maps: np.ndarray
    smoothed: np.ndarray
    indices: np.ndarray
    times: np.ndarray
    targets: np.ndarray
    labels: list[str | None]
    scores: np.ndarray
    method: str
    model: str
    params: dict[str, Any]
    stride: int
    smooth: float
    fps: float
    source: str
    files: dict[str, Path] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def peaks(self, smoothed: bool = True) -> np.ndarray:
        """``(T, 2)`` the ``(row, column)`` of each frame's largest map value."""
        stack = self.smoothed if smoothed else self.maps
        flat = stack.reshape(len(stack), -1).argmax(axis=1)
        return np.stack(np.unravel_index(flat, stack.shape[1:]), axis=1)

    def manifest(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready, with format version and library versions."""
        versions = library_versions()
        try:
            versions["av"] = _av().__version__
        except MissingDependencyError:  # pragma: no cover - the extra is installed to get here
            pass
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "source": self.source,
            "method": self.method,
            "model": self.model,
            "params": json.loads(json.dumps(self.params, default=str)),
            "stride": self.stride,
            "smooth": self.smooth,
            "fps": self.fps,
            "frames": len(self),
            "shape": list(self.maps.shape[1:]),
            "targets": [int(t) for t in self.targets],
            "labels": self.labels,
            "files": {k: p.name for k, p in self.files.items()},
            "libraries": versions,
        }


def _batches(it: Iterator[VideoFrame], n: int) -> Iterator[list[VideoFrame]]:
    batch: list[VideoFrame] = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _safe_name(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._+-" else "_" for c in stem).lstrip(".")
    return cleaned or "video"


def explain_video(
    model: VisionModel | nn.Module,
    path: str | os.PathLike[str],
    method: str = "gradcam",
    target: TargetLike = None,
    layer: Any = None,
    *,
    stride: int = 1,
    max_frames: int | None = None,
    smooth: float = 0.0,
    out: str | os.PathLike[str] | None = None,
    stem: str | None = None,
    frame_batch: int = 8,
    alpha: float = 0.5,
    max_pixels: int | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    progress: Callable[[int, int], object] | None = None,
    **params: Any,
) -> VideoExplanation:
    """Explain a clip frame by frame; with ``out``, write the overlay video and the arrays.

    Every kept frame (one in ``stride``, at most ``max_frames``) is explained with
    :func:`seethrough.explain`, ``frame_batch`` frames per call. The maps are smoothed over
    time with the exponential moving average of :func:`smooth_maps`
    (``s_t = w * s_{t-1} + (1 - w) * m_t``, ``w = smooth``), then laid over the frame as the
    model sees it (resized and cropped by its preprocessing) with :func:`seethrough.viz.overlay`
    (each frame's map scaled to its own [min, max]).

    Args:
        model: a :class:`~seethrough.models.VisionModel` or a ``torch.nn.Module`` (which gets
            the frames scaled to [0, 1], at their own size).
        path: the video file (see :func:`frames` for what is read and refused).
        method: a registry name, e.g. ``"gradcam"``.
        target: ``None`` (default): each frame's own top class, so the explained class may
            change from frame to frame (``targets`` says which); a class index or label: that
            class in every frame; or anything else :func:`seethrough.explain` takes for one
            image, applied to every frame.
        layer: the layer, for methods that take one.
        stride: explain one frame in ``stride`` (frames 0, stride, 2 * stride, ...); the overlay
            video plays at the clip's frame rate over ``stride``, so it lasts as long as the clip.
        max_frames: explain at most this many frames (``None``: all kept frames).
        smooth: the temporal smoothing weight ``w`` in ``[0, 1)``; ``0`` (default): none.
        out: a folder to write ``STEM.mp4``, ``STEM.npz`` and ``STEM.json`` into (created if
            needed); ``None``: write nothing. Existing files of that stem are never overwritten
            (``InvalidParameterError``).
        stem: the files' name (default: the method's name).
        frame_batch: frames per :func:`seethrough.explain` call (more: faster, more memory).
        alpha: the heatmap's opacity in the overlay video.
        max_pixels: the largest frame (width x height) read; default the images' limit.
        max_seconds: the longest clip read.
        progress: ``progress(done, total)`` after each batch of frames, counted in kept frames
            (``total`` estimated from the header; ``0`` when the header has no frame count);
            returning ``False`` cancels with :class:`~seethrough.errors.CancelledError` and
            leaves no file behind.
        **params: the method's parameters.

    Returns:
        A :class:`VideoExplanation` with the per-frame maps (``files`` names what was written).

    Raises:
        InvalidImageError: the file is not a video, is corrupt, or is over the limits.
        InvalidParameterError: a bad option, or files of that stem already in ``out``.
        MissingDependencyError: PyAV is not installed.

    Example:
        >>> import seethrough
        >>> from seethrough.video import explain_video
        >>> model = seethrough.load_model()
        >>> v = explain_video(model, "clip.mp4", "gradcam", stride=2, smooth=0.5, out="runs/clip")
        >>> v.maps.shape, v.files["video"].name  # doctest: +SKIP
        ((60, 224, 224), 'gradcam.mp4')
    """
    _check_count(frame_batch, "frame_batch", 1)
    record = _Record(_check_weight(smooth), alpha)
    paths = _output_paths(out, stem or method)
    source = Path(path)
    with frames(
        source, stride, max_frames, max_pixels=max_pixels, max_seconds=max_seconds
    ) as stream:
        fps = (stream.info.fps or 25.0) / stride
        expected = -(-(stream.info.frames or 0) // stride)
        expected = min(expected, max_frames) if max_frames is not None else expected
        ticker = Ticker(SimpleNamespace(progress=progress), expected, unit="frames")  # type: ignore[arg-type]

        def shown() -> Iterator[np.ndarray]:
            """The overlay frames, explaining ``frame_batch`` frames per call."""
            ticker.advance(0)
            for batch in _batches(stream, frame_batch):
                images = [f.image for f in batch]
                made = explain(model, images, method, target=target, layer=layer, **params)
                yield from (record(f, e) for f, e in zip(batch, made, strict=True))  # type: ignore[arg-type]
                ticker.advance(len(batch))

        if paths:
            _make_folder(paths["video"].parent)
            write_video(paths["video"], shown(), fps)
        else:
            for _ in shown():
                pass
    result = record.result(source, stride, fps, paths)
    if paths:
        _save_arrays(result, paths)
    return result


def _output_paths(out: str | os.PathLike[str] | None, stem: str) -> dict[str, Path]:
    """``STEM.mp4``, ``STEM.npz``, ``STEM.json`` in ``out`` (none without ``out``); files of
    that stem already there are an error, before any work."""
    if out is None:
        return {}
    folder, name = Path(out), _safe_name(stem)
    kinds = (("video", "mp4"), ("arrays", "npz"), ("manifest", "json"))
    paths = {kind: folder / f"{name}.{suffix}" for kind, suffix in kinds}
    taken = [p.name for p in paths.values() if p.exists()]
    if taken:
        raise InvalidParameterError(
            f"{folder} already holds {', '.join(taken)}: choose another folder or stem"
        )
    return paths


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidParameterError(f"{folder}: {exc.strerror or exc}") from None


class _Record:
    """Keeps each explained frame's map, smoothed map, index, time and class, and draws its
    overlay frame."""

    def __init__(self, weight: float, alpha: float) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise InvalidParameterError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if not 0.0 <= alpha <= 1.0:
            raise InvalidParameterError(f"alpha must lie in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.weight = weight
        self.step = _Smoother(weight)
        self.where: list[tuple[int, float]] = []  # each frame's index and time
        self.classes: list[tuple[int, str | None, float]] = []
        self.described: tuple[str, str, dict[str, Any]] = ("", "", {})
        self.maps: list[np.ndarray] = []
        self.smoothed: list[np.ndarray] = []

    def __call__(self, frame: VideoFrame, e: Explanation) -> np.ndarray:
        shown = self.step(e.map)
        self.where.append((frame.index, frame.time))
        self.classes.append((e.target, e.label, e.score))
        self.described = (e.method, e.model, e.params)
        self.maps.append(e.map.astype(np.float32))
        self.smoothed.append(shown.astype(np.float32))
        image = e.image if e.image is not None else frame.image
        return overlay(image, shown, alpha=self.alpha)

    def result(
        self, source: Path, stride: int, fps: float, paths: dict[str, Path]
    ) -> VideoExplanation:
        if not self.where:
            raise InvalidImageError(f"video '{source}' gave no frame to explain")
        method, model, params = self.described
        return VideoExplanation(
            maps=np.stack(self.maps),
            smoothed=np.stack(self.smoothed),
            indices=np.asarray([w[0] for w in self.where], dtype=np.int64),
            times=np.asarray([w[1] for w in self.where], dtype=np.float64),
            targets=np.asarray([c[0] for c in self.classes], dtype=np.int64),
            labels=[c[1] for c in self.classes],
            scores=np.asarray([c[2] for c in self.classes], dtype=np.float64),
            method=method,
            model=model,
            params=params,
            stride=stride,
            smooth=self.weight,
            fps=fps,
            source=str(source),
            files=paths,
        )


def _save_arrays(result: VideoExplanation, paths: dict[str, Path]) -> None:
    """``STEM.npz`` then ``STEM.json`` (last: its presence means the rest is complete)."""
    arrays = {
        "maps": result.maps,
        "smoothed": result.smoothed,
        "indices": result.indices,
        "times": result.times,
        "targets": result.targets,
        "scores": result.scores,
    }
    try:
        write_atomically(paths["arrays"], lambda p: np.savez_compressed(p, **arrays))
        text = json.dumps(result.manifest(), indent=2) + "\n"
        write_text_atomically(paths["manifest"], text)
    except BaseException:
        for p in (paths["video"], paths["arrays"]):  # no half result left behind
            p.unlink(missing_ok=True)
        raise
