"""Atomic file writes: a file is either absent, its old version, or complete; never half written.

Every writer of the package goes through :func:`write_atomically`: the content is written to a
hidden temporary file in the destination's folder (same file system, so the final rename is
atomic), which is then renamed over the destination. When the write fails or is interrupted
(``KeyboardInterrupt`` included) the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from os import PathLike
from pathlib import Path

__all__ = ["TEMPORARY_MARK", "is_temporary", "write_atomically", "write_text_atomically"]

TEMPORARY_MARK = ".tmp"
"""Part of every temporary name: ``.NAME.RANDOM.tmp.SUFFIX`` beside ``NAME`` (hidden)."""


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is the temporary file of a write in progress (or an interrupted one)."""
    return path.name.startswith(".") and TEMPORARY_MARK in path.name


def _temporary(path: Path, mode: int) -> Path:
    """A new, empty, hidden file beside ``path`` that keeps its suffix (some writers add one)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        name = f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_MARK}{path.suffix}"
        candidate = path.with_name(name)
        try:
            fd = os.open(candidate, flags, mode)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate


def write_atomically(
    path: str | PathLike[str], write: Callable[[Path], object], mode: int = 0o666
) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file over ``path``.

    Args:
        path: the destination; its folder must exist.
        write: writes the whole content to the path it is given (the temporary file, which
            has the destination's suffix).
        mode: the permissions of the new file, less the umask (the default gives what a
            plain ``open()`` gives; ``0o600`` keeps it private to its owner).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    temporary = _temporary(path, mode)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(
    path: str | PathLike[str], text: str, encoding: str = "utf-8", newline: str | None = None
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_atomically`)."""

    def write(p: Path) -> None:
        with p.open("w", encoding=encoding, newline=newline) as f:
            f.write(text)

    return write_atomically(path, write)
