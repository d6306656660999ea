"""The small CNN of the synthetic digits (:mod:`seethrough.datasets.synthetic`), its training and
its weights cache: ``load_model("synthetic_digits")`` loads it.

* :class:`DigitsNet` is a small CNN with a global-average-pool + linear head (CAM applies).
* :func:`train_digits_model` trains it in about a minute on two CPU cores;
  :func:`load_digits_model` trains once and caches the weights (safetensors) on disk.
"""

from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.threads import torch_threads
from ..datasets.synthetic import LABEL_NAMES, SyntheticDigits, make_digits
from ._trained import check_training, fit, load_or_train, to_input
from .preprocessing import Preprocessing

__all__ = [
    "LABEL_NAMES",
    "MEAN",
    "STD",
    "PREPROCESSING",
    "DEFAULT_LAYER",
    "CACHE_VERSION",
    "DigitsNet",
    "train_digits_model",
    "load_digits_model",
    "accuracy",
    "cache_path",
]

MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)  # make_digits(2000): about 0.50 and 0.22
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
PREPROCESSING = Preprocessing(size=64, resize="squash", mean=MEAN, std=STD)
"""What the net expects; ``load_model("synthetic_digits")`` uses it too."""
DEFAULT_LAYER = "features.block4"  # the last conv block (16x16 for a 64x64 input)
CACHE_VERSION = "v2"  # bump when the generator, the architecture or the training recipe changes


# -------------------------------------------------------------------------------------- model


def _block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) - batch norm - ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),  # not in place: backward hooks of explanation methods stay valid
    )


class DigitsNet(nn.Module):
    """A small CNN for 64x64 digits: conv blocks, global average pooling, one linear layer.

    ``features.stem`` (stride 2) and ``features.pool`` take a 64x64 input to 16x16 maps, which
    ``features.block2`` to ``features.block4`` (the CAM layer, :data:`DEFAULT_LAYER`) keep;
    ``block3`` is dilated (2) so that a unit of ``block4`` sees 41 pixels, a whole digit, while
    its maps stay local: with ``block4`` dilated too (4; a 65-pixel view, the whole image) the
    net was 1.5 points more accurate but Grad-CAM's pointing game fell from 0.70 to 0.32, below
    the centre prior.
    Input: RGB in [0, 1] normalised with :data:`MEAN` / :data:`STD`.
    """

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        """Build the network.

        Args:
            num_classes: the number of outputs.
            width: the channels of the 16x16 blocks (``stem`` has a quarter, ``block1`` half).
        """
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            OrderedDict(
                stem=_block(3, width // 4, stride=2),
                block1=_block(width // 4, width // 2),
                pool=nn.MaxPool2d(2),
                block2=_block(width // 2, width),
                block3=_block(width, width, dilation=2),
                block4=_block(width, width),
            )
        )
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, num_classes)`` of a normalised batch ``(N, 3, H, W)``."""
        return self.fc(self.gap(self.features(x)).flatten(1))


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` images to a normalised float batch ``(N, 3, H, W)``."""
    return to_input(images, PREPROCESSING)


def accuracy(model: nn.Module, data: SyntheticDigits, batch: int = 500) -> float:
    """The fraction of ``data`` that ``model`` (a :class:`DigitsNet`) classifies right.

    Args:
        model: the network; it is run in eval mode and left in eval mode.
        data: images and labels.
        batch: images per forward pass.
    """
    model.eval()
    with torch.no_grad():
        chunks = [data.images[i : i + batch] for i in range(0, len(data), batch)]
        predicted = [model(_to_input(images)).argmax(1).numpy() for images in chunks]
    return float((np.concatenate(predicted) == data.labels).mean()) if chunks else 0.0


# ----------------------------------------------------------------------------------- training


def train_digits_model(
    *,
    n_train: int = 24000,
    epochs: int = 2,
    batch: int = 64,
    lr: float = 8e-3,
    n_test: int = 2000,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[DigitsNet, dict[str, Any]]:
    """Train a :class:`DigitsNet` on :func:`make_digits` (about a minute on two CPU cores).

    AdamW with a one-cycle learning rate, cross-entropy, one seeded data order: the same seed,
    library versions and thread count give the same weights. Accuracy is measured on ``n_test``
    images of the test split (held-out digit sources, clutter of seed ``seed + 1``) and on the
    same images without their digit (near chance, 0.1, when the class lives in the digit only).
    The defaults reach about 0.95 held out; many images seen twice did better than fewer images
    seen more often for the same time.

    Args:
        n_train: training images (rendered once, before training).
        epochs: passes over them.
        batch: images per step.
        lr: the peak learning rate.
        n_test: held-out images for the reported accuracy.
        seed: seeds the data, the initial weights and the data order.
        threads: torch intra-op threads while training (``None``: torch's current setting).
        progress: show a progress bar and one line per epoch.

    Returns:
        The model in eval mode, and ``{"test_accuracy", "background_accuracy", "seconds", ...}``.
    """
    check_training(n_train, epochs, batch, lr, n_test)
    start = time.perf_counter()
    with torch_threads(threads):
        torch.manual_seed(seed)
        data = make_digits(n_train, seed=seed, split="train")
        model = fit(
            DigitsNet(), data.images, torch.from_numpy(data.labels), F.cross_entropy, _to_input,
            epochs=epochs, batch=batch, lr=lr, seed=seed, label="training synthetic digits",
            progress=progress, epoch_lines=True,
        )  # fmt: skip
        test = make_digits(n_test, seed=seed + 1, split="test")
        background = make_digits(n_test, seed=seed + 1, split="test", with_digit=False)
        info = {
            "test_accuracy": accuracy(model, test),
            "background_accuracy": accuracy(model, background),
            "seconds": round(time.perf_counter() - start, 1),
            "threads": torch.get_num_threads(),
        }
    info |= {"seed": seed, "n_train": n_train, "epochs": epochs, "batch": batch, "lr": lr}
    if progress:
        print(
            f"synthetic digits: held-out accuracy {info['test_accuracy']:.3f} "
            f"(without the digit {info['background_accuracy']:.3f}) in {info['seconds']:.0f} s",
            file=sys.stderr,
        )
    return model, info


# -------------------------------------------------------------------------------------- cache


def cache_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the trained weights are cached (a JSON sidecar with the same stem lies beside them).

    Args:
        cache_dir: the folder; default ``$SEETHROUGH_CACHE``, else ``$XDG_CACHE_HOME/seethrough``,
            else ``~/.cache/seethrough``.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("SEETHROUGH_CACHE") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "seethrough"
        )
    return Path(cache_dir).expanduser() / f"synthetic_digits-{CACHE_VERSION}.safetensors"


def load_digits_model(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> DigitsNet:
    """The trained :class:`DigitsNet` (eval mode): from the cache, else trained once and cached.

    Training (:func:`train_digits_model` with its defaults) takes about a minute; the weights go
    to :func:`cache_path` as safetensors, written atomically so that two processes training at
    once leave one whole file. A cache file that cannot be read or does not fit the network is
    an error (never silently retrained): delete it or pass ``retrain=True``.

    Args:
        cache_dir: the cache folder (see :func:`cache_path` for the default).
        retrain: train again and overwrite the cache.
        progress: show training progress (the one line saying that training starts is always
            printed, on stderr).

    Raises:
        WeightsUnavailableError: the cache file cannot be read.
        WeightsMismatchError: its tensors do not fit :class:`DigitsNet`.
    """
    path = cache_path(cache_dir)
    return load_or_train(
        path,
        build=DigitsNet,
        train=lambda: train_digits_model(progress=progress),
        retrain=retrain,
        announce=f"training the synthetic digits model once (~1 min); cached in {path.parent}",
        what="synthetic digits",
        remedy="delete it or call load_digits_model(retrain=True) to train again (~1 min)",
        version=CACHE_VERSION,
        libraries=("sklearn",),
    )
