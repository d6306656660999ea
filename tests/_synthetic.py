"""A synthetic localisation task with known answers: one bright shape on low-contrast clutter.

The class of an image is the shape of its single object; the object's pixel mask is kept, so an
explanation can be checked against where the evidence really is. Everything is generated from
explicit seeds, nothing touches the disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIZE = 32  # image side
OBJECT = 8  # object side; with 8x8 patches an object touches 1 to 4 of them


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the block, then restore the caller's setting.

    The models here are tiny. On a busy 2-core machine (the suite running beside benchmarks),
    two OpenMP threads fighting other processes for the cores made a training step of the test's
    ViT 10 to 50 times slower than one thread did (0.4-1.6 s against 0.03-0.05 s).
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _shapes() -> np.ndarray:
    square = np.ones((OBJECT, OBJECT), bool)
    ring = square.copy()
    ring[2:6, 2:6] = False
    plus = np.zeros((OBJECT, OBJECT), bool)
    plus[3:5, :] = True
    plus[:, 3:5] = True
    return np.stack([square, ring, plus])


SHAPES = _shapes()  # (classes, 8, 8): filled square, ring, plus
CLASSES = len(SHAPES)


def make_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``n`` images ``(n, 3, 32, 32)`` in [0, 1], their classes ``(n,)`` and object masks.

    Background: uniform noise in [0, 0.35] plus three dim rectangles of random size, position
    and colour (clutter). Object: one of :data:`SHAPES` in a bright random colour at a random,
    not patch-aligned position. ``masks[i]`` is True exactly on the object's pixels.
    """
    g = np.random.default_rng(seed)
    images = g.uniform(0.0, 0.35, (n, 3, SIZE, SIZE)).astype(np.float32)
    for k in range(n):
        for _ in range(3):
            h, w = g.integers(2, 10, 2)
            r, c = g.integers(0, SIZE - 2, 2)
            images[k, :, r : r + h, c : c + w] += g.uniform(0.05, 0.25, (3, 1, 1))
    labels = g.integers(0, CLASSES, n)
    corners = g.integers(0, SIZE - OBJECT + 1, (n, 2))
    colours = g.uniform(0.7, 1.0, (n, 3)).astype(np.float32)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for k in range(n):
        r, c = corners[k]
        shape = SHAPES[labels[k]]
        images[k, :, r : r + OBJECT, c : c + OBJECT][:, shape] = colours[k][:, None]
        masks[k, r : r + OBJECT, c : c + OBJECT] = shape
    return torch.from_numpy(np.clip(images, 0.0, 1.0)), torch.from_numpy(labels), masks


def patch_cells(masks: np.ndarray, patch: int) -> np.ndarray:
    """``(n, H/patch, W/patch)``: which patch cells contain at least one object pixel."""
    n, h, w = masks.shape
    return masks.reshape(n, h // patch, patch, w // patch, patch).any(axis=(2, 4))


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
) -> nn.Module:
    """Adam with a cosine-decayed learning rate; seeded shuffling. Returns the model in eval mode."""
    steps = epochs * -(-len(x) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), batch):
            b = perm[i : i + batch]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def pointing_hits(maps: list[np.ndarray], cells: np.ndarray) -> np.ndarray:
    """Pointing game: does the argmax of each ``(H, W)`` map fall in a patch cell of the object?

    A constant map (e.g. a CAM that the ReLU zeroed everywhere) points nowhere: a miss.
    """
    patch = maps[0].shape[0] // cells.shape[1]
    hits = []
    for m, c in zip(maps, cells, strict=True):
        r, col = np.unravel_index(np.argmax(m), m.shape)
        hits.append(bool(m.max() > m.min()) and bool(c[r // patch, col // patch]))
    return np.array(hits)
