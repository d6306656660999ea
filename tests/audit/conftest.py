"""Shared fixtures of the audit tests: a small random digits model (seeded, saved as a weights
file so a subprocess loads the same one) and generated digits written to folders."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seethrough
from seethrough.datasets.synthetic import make_digits


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """The random digits network's weights (seed 0), as a safetensors file."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vm = seethrough.load_model("synthetic_digits", weights="none")
    path = tmp_path_factory.mktemp("weights") / "digits.safetensors"
    save_file(vm.module.state_dict(), str(path))
    return path


@pytest.fixture(scope="session")
def model(weights):
    return seethrough.load_model("synthetic_digits", weights=str(weights))


def write_digits(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` generated digits as ``folder/dNNN.png``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    data = make_digits(n, seed=seed, split="test")
    paths = []
    for i, image in enumerate(data.images):
        paths.append(folder / f"d{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def digits_masks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The masks and labels of :func:`write_digits`'s images."""
    data = make_digits(n, seed=seed, split="test")
    return data.masks, data.labels


def assert_csv_equals_parquet(out: Path, metrics: tuple[str, ...]) -> None:
    """The run's ``table.parquet`` reads, and holds the same typed rows as ``table.csv``."""
    import math

    import pyarrow.parquet as pq

    from seethrough.audit import columns, read_table

    from_parquet = pq.read_table(out / "table.parquet").to_pylist()
    hidden = out / "table.parquet"
    moved = hidden.rename(out / "parquet.moved")
    try:
        from_csv = read_table(out, columns(metrics))
    finally:
        moved.rename(hidden)
    assert len(from_csv) == len(from_parquet) > 0
    for a, b in zip(from_parquet, from_csv, strict=True):
        assert list(a) == list(b)
        for k in a:
            same = a[k] == b[k] or (
                isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])
            )
            assert same, (k, a[k], b[k])


def sigterm_half_way(
    process: subprocess.Popen[str], out: Path, *, parts: int = 3, wait: float = 240, ignore=None
) -> str:
    """Wait until the audit running in ``process`` has written ``parts`` parts of ``out``'s
    table, send it SIGTERM, and check that it stopped as promised: exit code 130, one line on
    stderr saying so (``ignore``: a compiled pattern of lines that are not the command's), no
    traceback. Returns stderr."""
    folder = out / "parts"
    deadline = time.monotonic() + wait
    while process.poll() is None and time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.glob("part-*.jsonl"))) >= parts:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    lines = [
        line
        for line in stderr.splitlines()
        if line.strip() and not (ignore is not None and ignore.match(line))
    ]
    assert len(lines) == 1 and lines[0].startswith("audit interrupted:"), stderr
    assert "Traceback" not in stderr
    return stderr


def stopped_rows(out: Path, n: int, parts: int = 3) -> list[dict]:
    """The table a stopped run left: at least ``parts`` and fewer than ``n`` rows, no item twice,
    no temporary file left behind."""
    from seethrough.audit import read_table

    rows = read_table(out)
    ids = [r["id"] for r in rows]
    assert parts <= len(ids) < n and len(set(ids)) == len(ids)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    return rows
