"""Shared fixtures: tiny deterministic models with known structure, and the real bundled model."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv-relu-conv-relu -> global average pool -> linear: CAM applies, Grad-CAM too."""

    def __init__(self, classes: int = 4, inplace: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(6, 8, 3, padding=1, stride=2),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=inplace),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def make_tiny(seed: int = 0, dtype: torch.dtype = torch.float32, **kw) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN(**kw).to(dtype)
    with torch.no_grad():  # non-trivial batch-norm statistics
        bn = model.features[3]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def make_vit(seed: int = 0) -> nn.Module:
    """A timm ViT small enough for the common suite: 16x16 input, 4x4 patches, 2 blocks."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=4,
        embed_dim=16,
        depth=2,
        num_heads=2,
        num_classes=4,
    ).eval()


@pytest.fixture
def tiny() -> TinyCNN:
    return make_tiny()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 16, 16, generator=g)


@pytest.fixture(scope="session")
def lite0():
    """The bundled EfficientNet-Lite0 with its real ImageNet weights (loaded once)."""
    import seethrough

    return seethrough.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """A cache folder holding the synthetic-digits model, trained once per test session.

    One torch thread: ~1.5 min alone, and no slower beside another busy process (two OpenMP
    threads on a 2-core machine with one core taken ran 2 to 3 times slower than one thread).
    """
    from seethrough.core.threads import torch_threads
    from seethrough.models.digits import load_digits_model

    folder = tmp_path_factory.mktemp("digits-cache")
    with torch_threads(1):
        load_digits_model(cache_dir=folder, progress=False)
    return folder


@pytest.fixture
def chart_titles(monkeypatch) -> list[str]:
    """Titles of the dashboard's prediction charts drawn from now on (its chart cache emptied)."""
    import seethrough.viz
    from seethrough.dashboard import service as svc

    titles: list[str] = []
    real = seethrough.viz.prediction_bar_chart

    def chart(top, *, title):
        titles.append(title)
        return real(top, title=title)

    monkeypatch.setattr(seethrough.viz, "prediction_bar_chart", chart)
    monkeypatch.setattr(svc, "_PREDICTED", svc._LRU(4))
    return titles
