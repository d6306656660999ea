"""What the models trained here (the synthetic digits, the scene segmenter and detector) share:
one training loop and one weights cache.

* :func:`fit` trains with AdamW (Loshchilov and Hutter, "Decoupled Weight Decay
  Regularization", ICLR 2019; weight decay ``1e-4``) under a one-cycle learning rate (Smith and
  Topin, "Super-Convergence", 2017: warm up for the first 20 % of the steps to ``lr``, then
  anneal), over the data in one seeded order: the same seed, library versions and thread count
  give the same weights, bit for bit.
* :func:`load_or_train` reads the weights from a safetensors file, or trains once and writes
  them there (atomically, a JSON sidecar of how they were made beside them); a file that cannot
  be read or does not fit the network is an error, never silently retrained.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from .._io import write_atomically
from ..errors import InvalidParameterError, WeightsMismatchError, WeightsUnavailableError
from .preprocessing import Preprocessing

__all__ = ["to_input", "check_training", "fit", "save_weights", "load_weights", "load_or_train"]

M = TypeVar("M", bound=nn.Module)


def to_input(images: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` images to a float batch ``(N, 3, H, W)``: ``(x / 255 - mean) / std``
    with ``preprocessing``'s mean and std."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    return preprocessing.normalize(x)


def check_training(n_train: int, epochs: int, batch: int, lr: float, n_test: int) -> None:
    """Refuse a training recipe that cannot run.

    Raises:
        InvalidParameterError: a count below 1, or a learning rate that is not positive.
    """
    if min(n_train, epochs, batch, n_test) < 1 or not lr > 0:
        raise InvalidParameterError("n_train, epochs, batch and n_test must be >= 1, lr > 0")


def fit(
    model: M,
    images: np.ndarray,
    targets: torch.Tensor,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    to_input: Callable[[np.ndarray], torch.Tensor],
    *,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    label: str,
    progress: bool,
    epoch_lines: bool = False,
    refresh: Callable[[int], tuple[np.ndarray, torch.Tensor]] | None = None,
) -> M:
    """Train ``model`` in place and return it in eval mode (contiguous memory again).

    Each of ``epochs`` passes visits the ``N`` images in an order drawn from a generator seeded
    with ``seed`` and takes ``ceil(N / batch)`` steps of AdamW (weight decay ``1e-4``) on
    ``loss_of(model(to_input(images[idx])), targets[idx])``, the learning rate following
    ``OneCycleLR(lr, pct_start=0.2)`` over all steps; the model runs in channels-last memory
    (faster convolutions on CPU).

    Args:
        model: the network, freshly initialised.
        images: uint8 ``(N, H, W, 3)`` training images.
        targets: what the loss compares the outputs with, indexed like ``images``.
        loss_of: ``(outputs, targets) -> scalar loss``.
        to_input: images to the network's normalised input.
        epochs: passes over the data.
        batch: images per step.
        lr: the peak learning rate.
        seed: seeds the data order.
        label: what the progress bar says (``"training ..."``).
        progress: show a progress bar.
        epoch_lines: with ``progress``, also print each epoch's mean loss.
        refresh: ``epoch -> (images, targets)``, new data of the same size for each epoch after
            the first (which trains on ``images``): fresh samples where they are cheap to make
            keep a small model from memorising its training set. When torch runs on one
            intra-op thread, the next epoch's data is made in a background thread while an
            epoch trains (on a second core, rendering no longer adds to the time); ``refresh``
            must then be safe to call from another thread. The weights are the same either way.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    n = len(images)
    model.to(memory_format=torch.channels_last)
    steps = epochs * -(-n // batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, steps, pct_start=0.2)
    order = torch.Generator().manual_seed(seed)
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    # one thread runs ops on its own core when torch's pool has one thread; with more, the
    # pool already takes every core. Leaving the block waits for the thread, also after an
    # exception: it must not outlive the caller's thread settings (``torch_threads``).
    prefetch = refresh is not None and epochs > 1 and torch.get_num_threads() == 1
    pool = ThreadPoolExecutor(1, thread_name_prefix="seethrough-refresh") if prefetch else None
    pending: Future[tuple[np.ndarray, torch.Tensor]] | None = None
    with bar, pool or nullcontext() as ahead:
        task = bar.add_task("train", total=steps, loss=float("nan"))
        for epoch in range(epochs):
            if refresh is not None and epoch > 0:
                images, targets = refresh(epoch) if pending is None else pending.result()
                if len(images) != n:
                    raise InvalidParameterError(
                        f"refresh({epoch}) gave {len(images)} items, not {n}"
                    )
            if ahead is not None and epoch + 1 < epochs:
                pending = ahead.submit(refresh, epoch + 1)  # type: ignore[arg-type]
            model.train()
            total = 0.0
            for idx in torch.randperm(n, generator=order).split(batch):
                x = to_input(images[idx.numpy()]).to(memory_format=torch.channels_last)
                loss = loss_of(model(x), targets[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(idx)
                bar.update(task, advance=1, loss=loss.item())
            if progress and epoch_lines:
                bar.console.print(f"epoch {epoch + 1}/{epochs}: mean loss {total / n:.4f}")
    return model.to(memory_format=torch.contiguous_format).eval()


def save_weights(
    model: nn.Module,
    info: dict[str, Any],
    path: Path,
    *,
    version: str,
    libraries: Sequence[str] = (),
) -> None:
    """Write ``model``'s weights to ``path`` (safetensors, ``version`` in its metadata) and a JSON
    sidecar beside it (``version``, ``info``, the versions of torch, numpy, ``libraries`` and
    Python), each atomically: the sidecar first, so that weights present mean the sidecar is too.

    Args:
        model: the trained network.
        info: how it was trained and how well it does.
        path: the weights file (the sidecar takes its stem and ``.json``).
        version: the cache version (bumped when a generator, architecture or recipe changes).
        libraries: more modules whose ``__version__`` the sidecar records.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, "numpy": np.__version__}
    versions |= {name: importlib.import_module(name).__version__ for name in libraries}
    meta = {"version": version, **info, **versions, "python": platform.python_version()}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    sidecar = json.dumps(meta, indent=2)
    write_atomically(path.with_suffix(".json"), lambda p: p.write_text(sidecar), mode=0o600)
    weights = {"version": version}
    write_atomically(path, lambda p: save_file(state, str(p), metadata=weights), mode=0o600)


def load_weights(path: Path, build: Callable[[], M], *, what: str, remedy: str) -> M:
    """A network of ``build`` (eval mode) with the weights of ``path``, which must fit it exactly.

    Args:
        path: a safetensors file written by :func:`save_weights`.
        build: a fresh network of the right architecture (built once the file is read).
        what: the weights' name in errors (``"the cached <what> weights ..."``).
        remedy: what to do about a bad file, ending the errors.

    Raises:
        WeightsUnavailableError: the file cannot be read.
        WeightsMismatchError: its tensors are missing, unexpected or mis-shaped for the network.
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise WeightsUnavailableError(
            f"cannot read the cached {what} weights '{path}' ({type(exc).__name__}): {remedy}"
        ) from None
    model = build()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        wrong = sorted(k for k in expected.keys() | found.keys() if found.get(k) != expected.get(k))
        raise WeightsMismatchError(
            f"the cached {what} weights '{path}' do not fit {type(model).__name__} "
            f"({len(wrong)} missing, unexpected or mis-shaped: {', '.join(wrong[:5])}): {remedy}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_or_train(
    path: Path,
    *,
    build: Callable[[], M],
    train: Callable[[], tuple[M, dict[str, Any]]],
    retrain: bool,
    announce: str,
    what: str,
    remedy: str,
    version: str,
    libraries: Sequence[str] = (),
) -> M:
    """The trained model: read from ``path`` (:func:`load_weights`), else, or with ``retrain``,
    trained once (``announce`` printed on stderr first) and written there (:func:`save_weights`).

    Args:
        path: the weights file.
        build: a fresh network of the right architecture.
        train: trains one: ``() -> (model in eval mode, info)``.
        retrain: train again and overwrite ``path``.
        announce: the line saying that training starts (always printed).
        what: the weights' name in errors.
        remedy: what to do about a bad file, ending the errors.
        version: the cache version written with the weights.
        libraries: more modules whose versions the sidecar records.

    Raises:
        WeightsUnavailableError: the file cannot be read.
        WeightsMismatchError: its tensors do not fit the network.
    """
    if retrain or not path.is_file():
        print(announce, file=sys.stderr)
        model, info = train()
        save_weights(model, info, path, version=version, libraries=libraries)
        return model
    return load_weights(path, build, what=what, remedy=remedy)
