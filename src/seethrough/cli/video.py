"""``seethrough explain clip.mp4``: the video branch of the explain command.

Each clip is explained frame by frame with each method (:func:`seethrough.video.explain_video`)
into ``OUT/<clip>/``: ``METHOD.mp4`` (the overlay video), ``METHOD.npz`` (the per-frame maps,
frame indices and times) and ``METHOD.json`` (the manifest, written last). Files already there
are never overwritten: the command stops with a one-line error instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .. import errors
from ..models import VisionModel
from ..video import explain_video, is_video
from ._shared import progress_bar, say_error

__all__ = ["split_videos", "explain_videos", "check_video_options"]


def split_videos(sources: list[str]) -> tuple[list[str], list[str]]:
    """``(videos, others)``: the sources with a video suffix, and the rest, in order."""
    videos = [s for s in sources if not s.startswith("sample:") and is_video(s)]
    return videos, [s for s in sources if s not in videos]


def check_video_options(
    videos: list[str], stride: int, smooth: float, max_frames: int | None
) -> None:
    """The video options are checked before a model is loaded; without a video, giving one is
    an error (it would be silently ignored)."""
    if not videos and (stride != 1 or smooth != 0.0 or max_frames is not None):
        raise errors.InvalidParameterError(
            "--stride, --smooth and --max-frames apply to videos (.mp4 .avi .mov .mkv .webm) only"
        )
    if stride < 1:
        raise errors.InvalidParameterError(f"--stride must be at least 1, got {stride}")
    if not 0.0 <= smooth < 1.0:
        raise errors.InvalidParameterError(f"--smooth must lie in [0, 1), got {smooth:g}")
    if max_frames is not None and max_frames < 1:
        raise errors.InvalidParameterError(f"--max-frames must be at least 1, got {max_frames}")


def explain_videos(
    vm: VisionModel,
    videos: list[str],
    names: dict[str, str],
    methods: list[str],
    targets: list[tuple[str, Any]],
    layer: str | None,
    params: dict[str, dict[str, str]],
    out: Path,
    *,
    stride: int = 1,
    smooth: float = 0.0,
    max_frames: int | None = None,
) -> None:
    """Explain each clip with each method into ``OUT/<names[clip]>/``.

    A clip that cannot be read is reported on one line and the others still run (with one clip,
    its error stops the command); the command then exits with code 2.
    """
    if len(targets) > 1 or targets[0][0]:
        raise errors.InvalidParameterError(
            "a video takes one class as --target (or none: each frame's top class)"
        )
    target = targets[0][1]
    failed: list[str] = []
    with progress_bar() as bar:
        task = bar.add_task("", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        for clip in videos:
            folder = out / names[clip]
            for method in methods:
                bar.reset(task, description=f"{names[clip]}: {method}", total=None)
                try:
                    result = explain_video(
                        vm,
                        clip,
                        method,
                        target=target,
                        layer=layer,
                        stride=stride,
                        smooth=smooth,
                        max_frames=max_frames,
                        out=folder,
                        progress=tick,
                        **params[method],
                    )
                except errors.InvalidImageError as exc:
                    if len(videos) == 1:
                        raise
                    say_error(str(exc))
                    failed.append(clip)
                    break
                written = ", ".join(p.name for p in result.files.values())
                bar.console.print(
                    f"{clip}: {len(result)} frames, wrote {folder}/ ({written})",
                    markup=False,
                    soft_wrap=True,
                )
    if failed:
        say_error(f"{len(failed)} video(s) could not be read: {', '.join(failed)}")
        raise typer.Exit(2)
