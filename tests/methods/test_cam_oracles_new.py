"""The newer CAM methods against independent implementations: pytorch-grad-cam and torchcam.

Both libraries are installed for the tests only. Same model, input, layer and classes on both
sides; where a method draws noise the oracle's noise source is replaced by the noise the library
draws from its seed, so the comparison is exact, not statistical.

- pytorch-grad-cam (AblationCAM, FullGrad, GradCAMElementWise, KPCA_CAM) returns min-max
  normalised maps at the input size (see ``test_cam_reference.ORACLE_ATOL`` for why min-max of
  our ``.map`` equals them within 1e-4). Its normalisation divides by ``max + 1e-7``; dividing
  its map once more by its own maximum removes that epsilon, which matters on maps with a small
  range (FullGrad's bias terms).
- torchcam (SSCAM, ISCAM, SmoothGradCAMpp) returns un-normalised maps with
  ``normalized=False``: compared with our ``.map`` to 1e-4 relative. torchcam scales the
  activations to [0, 1] at the layer's resolution and then upsamples them; the library (as
  Score-CAM's paper and pytorch-grad-cam) upsamples first: with a stride-1 layer at the input
  resolution the two orders agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough

from .test_cam_reference import BATCH, ORACLE_ATOL, assert_close, minmax, oracle_setup

pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("torchcam")


def grad_cam_maps(cls_name: str, model, layer, x, classes, **kw) -> np.ndarray:
    """pytorch-grad-cam's maps, divided once more by their maximum (see module doc)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pytorch_grad_cam, cls_name)(model=model, target_layers=[layer], **kw)
    try:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in classes])
    finally:
        cam.activations_and_grads.release()
    model.zero_grad(set_to_none=True)
    assert out.shape == (BATCH, *x.shape[-2:])
    return np.stack([m / m.max() if m.max() > 0 else m for m in out.astype(np.float64)])


def assert_normalised_close(ours, theirs: np.ndarray, what: str) -> None:
    for e, t in zip(ours, theirs, strict=True):
        if t.max() == 0:  # ReLU left nothing (a class with a negative score): ours neither
            assert e.map.max() == 0, f"{what}: positive map where the oracle's is 0"
            continue
        diff = np.abs(minmax(e.map.astype(np.float64)) - t).max()
        assert diff < ORACLE_ATOL, f"{what}: max |diff| = {diff:.2e}"


# ----------------------------------------------------------------------------- pytorch-grad-cam


@pytest.mark.parametrize("kind", ["tiny", "gap", "flat"])
@pytest.mark.parametrize(
    "method,theirs,params",
    [
        ("ablationcam", "AblationCAM", {"batch_size": 4}),
        ("gradcam_elementwise", "GradCAMElementWise", {}),
        ("kpcacam", "KPCA_CAM", {}),
    ],
    ids=["ablationcam", "gradcam_elementwise", "kpcacam"],
)
def test_layer_cams_match_pytorch_grad_cam(method, theirs, params, kind):
    model, layer, x, classes = oracle_setup(kind, method)
    if method == "kpcacam":  # scikit-learn's kernel PCA in float32 is off by ~1e-4
        model, x = model.double(), x.double()
    ours = seethrough.explain(model, x, method, target=classes, layer="features", **params)
    kw = {"batch_size": 4} if method == "ablationcam" else {}
    assert_normalised_close(ours, grad_cam_maps(theirs, model, layer, x, classes, **kw), method)


@pytest.mark.parametrize("kind", ["tiny", "gap"])
def test_fullgrad_matches_pytorch_grad_cam(kind):
    """pytorch-grad-cam scales each channel of each term separately: normalize='channel'."""
    model, _, x, classes = oracle_setup(kind, "fullgrad")
    ours = seethrough.explain(model, x, "fullgrad", target=classes, normalize="channel")
    theirs = grad_cam_maps("FullGrad", model, None, x, classes)
    assert_normalised_close(ours, theirs, "fullgrad")
    # the paper's per-term scaling is another map
    paper = seethrough.explain(model, x, "fullgrad", target=classes)
    assert np.abs(minmax(paper[0].map.astype(np.float64)) - theirs[0]).max() > 1e-3


# ------------------------------------------------------------------------------------ torchcam


class SeededNoise:
    """Stands in for torchcam's ``torch.distributions.Normal``: hands out given draws in order."""

    def __init__(self, draws: list[torch.Tensor]) -> None:
        self.draws = list(draws)

    def sample(self, size: torch.Size) -> torch.Tensor:
        draw = self.draws.pop(0)
        assert tuple(draw.shape) == tuple(size)
        return draw


def torchcam_maps(extractor, model, x, classes) -> np.ndarray:
    with extractor:
        out = model(x)
        (cams,) = extractor(class_idx=classes, scores=out, normalized=False)
    return cams.detach().double().numpy()


@pytest.mark.parametrize("kind", ["gap", "flat"])
def test_iscam_matches_torchcam(kind):
    from torchcam.methods import ISCAM

    model, _, x, classes = oracle_setup(kind, "scorecam")  # stride-1 layer
    n = 4
    ours = seethrough.explain(
        model, x, "iscam", target=classes, layer="features", n_samples=n, batch_size=16
    )
    extractor = ISCAM(model, "features", batch_size=16, num_samples=n, input_shape=x.shape[1:])
    for e, t in zip(ours, torchcam_maps(extractor, model, x, classes), strict=True):
        assert_close(e.map, t, rtol=1e-4)


@pytest.mark.parametrize("kind", ["gap", "flat"])
def test_sscam_matches_torchcam_with_the_same_noise(kind):
    from torchcam.methods import SSCAM

    from seethrough.core.noise import normal_noise

    model, _, x, classes = oracle_setup(kind, "scorecam")
    n, std, seed = 3, 0.5, 11
    params = {"n_samples": n, "noise": std, "seed": seed, "batch_size": 64}
    ours = seethrough.explain(model, x, "sscam", target=classes, layer="features", **params)
    c, size = 6, tuple(x.shape[-2:])
    # ours: per image, from the seed afresh, all passes' masks in one draw (batch_size >= n * C)
    draw = normal_noise((n * c, 1, *size), torch.Generator().manual_seed(seed), x, std)
    per_pass = draw.view(n, c, *size)
    extractor = SSCAM(model, "features", batch_size=64, num_samples=n, std=std)
    extractor._distrib = SeededNoise([p.expand(len(x), c, *size) for p in per_pass])
    theirs = torchcam_maps(extractor, model, x, classes)
    for e, t in zip(ours, theirs, strict=True):
        assert_close(e.map, t, rtol=1e-4)


@pytest.mark.parametrize("kind", ["gap", "tiny"])
def test_smoothgradcampp_matches_torchcam(kind):
    """On a GAP + linear head the layer's gradient does not depend on the input, so the noise
    changes neither side's weights; torchcam's map then also uses its last noisy copy's
    activations, so its noise is set to 0 (ours stays on: it must not matter here). The
    smoothing itself is checked against the formula in test_new_cams."""
    from torchcam.methods import SmoothGradCAMpp

    model, _, x, classes = oracle_setup(kind, "gradcam++")  # head x100: see oracle_setup
    ours = seethrough.explain(
        model, x, "smoothgradcam++", target=classes, layer="features", n_samples=3
    )
    extractor = SmoothGradCAMpp(model, "features", num_samples=3, input_shape=x.shape[1:])
    extractor._distrib = SeededNoise([torch.zeros_like(x)] * 3)
    with torch.enable_grad():
        theirs = torchcam_maps(extractor, model, x, classes)
    for e, t in zip(ours, theirs, strict=True):
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(t)[None, None], size=e.map.shape, mode="bilinear"
        )[0, 0]
        assert_close(e.map, ref.numpy(), rtol=1e-4)
