"""The CAM family against independent references, not against itself.

1. Closed-form float64 references: tiny models whose head is linear in the explained layer's
   activations ``A`` (N, C, h, w), so ``dy/dA`` is known without autograd:

   - ``gap``:  GAP + Linear       ->  dy_k/dA_c[i, j] = W[k, c] / (h*w)   (constant per channel)
   - ``flat``: Flatten + Linear   ->  dy_k/dA = W[k].reshape(C, h, w)     (varies in space)
   - ``mlp``:  Flatten + Linear + ReLU + Linear (piecewise linear; used where autograd is allowed)

   Each variant's map is computed in numpy float64 from ``A`` and that gradient, following the
   paper's formula, and compared with ``Explanation.raw``; ``Explanation.map`` is checked to be
   ReLU(raw) upsampled bilinearly (align_corners=False).
2. Relations that must hold exactly on a GAP + linear head (CAM = Grad-CAM * h*w, ...).
3. Grad-CAM++ against the paper's general formula with true 2nd/3rd derivatives of exp(y).
4. pytorch-grad-cam as an independent implementation (test-only oracle).
5. The typed errors.

Tolerances: the library computes in the model's dtype (float64 here) and returns ``raw`` as
float32, so references agree to float32 rounding (~6e-8 relative); rtol=1e-5 (plus an atol of
1e-6 of the map's largest magnitude, for entries near 0 where the sum over channels cancels)
leaves margin while any formula error (a missing factor, a wrong power, a centred matrix, a wrong
normalisation) changes values by far more than 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seethrough
from seethrough.errors import (
    InvalidParameterError,
    InvalidTargetError,
    MethodNotApplicableError,
    UnknownClassError,
    UnknownLayerError,
)

from ..conftest import make_tiny

SIZE = 12  # input side; the explained layer is SIZE / stride
CLASSES = 5
BATCH = 3
TARGETS = [None, 2, [4, 0, 1]]  # top class, one class for all, one class per image
TARGET_IDS = ["top", "class2", "per-image"]
RTOL = 1e-5


# --------------------------------------------------------------------------- models and helpers


class Net(nn.Module):
    """``features`` (conv-relu-conv-relu, the explained layer) then a head (see module doc)."""

    def __init__(self, head: str, channels: int = 6, size: int = SIZE, stride: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 5, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(5, channels, 3, padding=1, stride=stride),
            nn.ReLU(),
        )
        side = (size - 1) // stride + 1
        flat = channels * side * side
        if head == "gap":
            layers = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, CLASSES)]
        elif head == "flat":
            layers = [nn.Flatten(), nn.Linear(flat, CLASSES)]
        elif head == "mlp":
            layers = [nn.Flatten(), nn.Linear(flat, 8), nn.ReLU(), nn.Linear(8, CLASSES)]
        else:
            raise ValueError(head)
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_net(
    head: str,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    head_scale: float = 1.0,
    bias: tuple[float, float] = (0.0, 0.3),
    **kw,
) -> Net:
    """A seeded Net; ``head_scale`` multiplies the last Linear's weights (larger logit spread)."""
    torch.manual_seed(seed)
    model = Net(head, **kw).to(dtype).eval()
    with torch.no_grad():
        model.features[2].bias.uniform_(*bias)  # (0, 0.3): most channels alive on x in [0, 1]
        model.head[-1].weight.mul_(head_scale)
    return model


def inputs(n: int = BATCH, size: int = SIZE, dtype: torch.dtype = torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g).to(dtype)


def signed_setup(head: str, **kw) -> tuple[Net, torch.Tensor]:
    """Zero-bias conv and inputs in [-1, 1]: ``features.2`` (pre-ReLU) has mixed-sign maps."""
    return make_net(head, bias=(0.0, 0.0), **kw), 2 * inputs() - 1


def setup(head: str, layer: str, **kw) -> tuple[Net, torch.Tensor]:
    return signed_setup(head, **kw) if layer == "features.2" else (make_net(head, **kw), inputs())


def activations(model: Net, x: torch.Tensor, layer: str = "features") -> np.ndarray:
    """The explained layer's output: ``features`` (post-ReLU) or ``features.2`` (signed conv)."""
    with torch.no_grad():
        a = (model.features if layer == "features" else model.features[:3])(x).double().numpy()
    if layer == "features":
        assert (a.sum(axis=(2, 3)) > 0).mean() > 0.5, "most channels should be alive"
    else:
        assert a.min() < 0 < a.max()
    return a


def logits_of(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).double().numpy()


def resolve(logits: np.ndarray, target) -> list[int]:
    items = target if isinstance(target, list) else [target] * len(logits)
    return [int(logits[i].argmax()) if t is None else int(t) for i, t in enumerate(items)]


def head_weight(model: Net) -> np.ndarray:
    return model.head[-1].weight.detach().double().numpy()


def analytic_grad(model: Net, head: str, coeffs: np.ndarray, shape: tuple) -> np.ndarray:
    """dy/dA for the score ``y_n = sum_k coeffs[n, k] * logit_k`` (no autograd)."""
    n, c, h, w = shape
    wk = coeffs @ head_weight(model)  # (N, C) for gap, (N, C*h*w) for flat
    if head == "gap":
        return np.broadcast_to((wk / (h * w))[:, :, None, None], shape).copy()
    assert head == "flat"
    return wk.reshape(shape)


def one_hot(classes: list[int]) -> np.ndarray:
    return np.eye(CLASSES)[classes]


def weighted(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.einsum("nc,nchw->nhw", w, a)


def upsample(m: np.ndarray, size: tuple[int, int], dtype=torch.float32) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(m)).to(dtype)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def assert_close(actual, expected, rtol: float = RTOL, what: str = "") -> None:
    expected = np.asarray(expected, dtype=np.float64)
    atol = 1e-6 * max(float(np.abs(expected).max()), 1e-30)
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol, err_msg=what
    )


def assert_map_is_upsampled(e, relu: bool = True) -> None:
    """``.map`` = (ReLU of) ``.raw`` upsampled bilinearly (align_corners=False) to the input."""
    shown = np.maximum(e.raw, 0) if relu else e.raw
    expected = upsample(shown, e.map.shape)
    assert e.map.dtype == np.float32
    assert_close(e.map, expected, rtol=1e-6, what="map != upsampled ReLU(raw)")


def check(es, expected: np.ndarray, classes, logits: np.ndarray, size=(SIZE, SIZE)) -> None:
    """Compare a batch of explanations with a float64 reference of shape (N, h, w)."""
    assert len(es) == len(expected)
    assert np.abs(expected).max() > 0, "degenerate reference"
    for i, e in enumerate(es):
        assert e.raw.dtype == np.float32 and e.raw.shape == expected[i].shape
        assert_close(e.raw, expected[i], what=f"raw of image {i}")
        assert_map_is_upsampled(e)
        ref_map = upsample(np.maximum(expected[i], 0), size, torch.float64)
        assert_close(e.map, ref_map, what=f"map of image {i}")
        if classes is not None:
            k = classes[i]
            assert e.target == k
            assert e.score == pytest.approx(logits[i, k], rel=1e-9, abs=1e-12)
            p = np.exp(logits[i] - logits[i].max())
            assert e.probability == pytest.approx(p[k] / p.sum(), rel=1e-5)


# ----------------------------------------------------------- references from the papers' formulas


def ref_gradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Selvaraju et al.: w_c = mean_ij g_c."""
    return weighted(g.mean(axis=(2, 3)), a)


def ref_gradcampp(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Chattopadhyay et al. eq. 19 for y piecewise linear in A (powers of g)."""
    s = a.sum(axis=(2, 3), keepdims=True)
    num = g**2
    den = 2 * g**2 + s * g**3
    alpha = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    return weighted((alpha * np.maximum(g, 0)).sum(axis=(2, 3)), a)


def ref_xgradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Fu et al.: w_c = sum_ij (A_c[i,j] / sum_ab A_c[a,b]) g_c[i,j]."""
    s = a.sum(axis=(2, 3), keepdims=True)
    normalised = np.divide(a, s, out=np.zeros_like(a), where=s != 0)
    return weighted((normalised * g).sum(axis=(2, 3)), a)


def ref_layercam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Jiang et al.: sum_c ReLU(g_c) * A_c, element-wise."""
    return (np.maximum(g, 0) * a).sum(axis=1)


def ref_hirescam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Draelos & Carin: sum_c g_c * A_c, element-wise."""
    return (g * a).sum(axis=1)


GRAD_REFS = {
    "gradcam": ref_gradcam,
    "gradcam++": ref_gradcampp,
    "xgradcam": ref_xgradcam,
    "layercam": ref_layercam,
    "hirescam": ref_hirescam,
}


def ref_eigencam(a: np.ndarray) -> np.ndarray:
    """Muhammad & Yeasin: (h*w, C) activations, NOT centred, projected on v_1; sum >= 0."""
    n, c, h, w = a.shape
    out = np.empty((n, h, w))
    for i in range(n):
        m = a[i].reshape(c, h * w).T
        _, sv, vt = np.linalg.svd(m, full_matrices=False)
        assert sv[0] > 1.01 * sv[1], "the first singular vector must be well defined"
        p = m @ vt[0]
        out[i] = (p if p.sum() >= 0 else -p).reshape(h, w)
    return out


def ref_scorecam(model: nn.Module, x: torch.Tensor, a: np.ndarray, classes) -> np.ndarray:
    """Wang et al.: masks = min-max scaled upsampled channels; w = softmax_c(y(x * mask_c))."""
    n, c = a.shape[:2]
    up = F.interpolate(
        torch.from_numpy(a), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False
    ).numpy()
    lo = up.min(axis=(2, 3), keepdims=True)
    span = up.max(axis=(2, 3), keepdims=True) - lo
    masks = np.divide(up - lo, span, out=np.zeros_like(up), where=span > 0)
    scores = np.empty((n, c))
    for i in range(n):
        for ch in range(c):
            masked = x[i : i + 1] * torch.from_numpy(masks[i, ch])
            scores[i, ch] = logits_of(model, masked)[0, classes[i]]
    w = np.exp(scores - scores.max(axis=1, keepdims=True))
    return weighted(w / w.sum(axis=1, keepdims=True), a)


# ------------------------------------------------------------------ 1. closed-form references


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("head", ["gap", "flat"])
@pytest.mark.parametrize("method", list(GRAD_REFS))
def test_gradient_cams_match_closed_form(method, head, target):
    model, x = make_net(head), inputs()
    a = activations(model, x)
    logits = logits_of(model, x)
    classes = resolve(logits, target)
    g = analytic_grad(model, head, one_hot(classes), a.shape)
    if head == "flat":  # the spatially varying case is really exercised
        assert np.abs(g - g.mean(axis=(2, 3), keepdims=True)).max() > 1e-3
    es = seethrough.explain(model, x, method, target=target, layer="features")
    assert all(e.layer == "features" for e in es)
    check(es, GRAD_REFS[method](a, g), classes, logits)


@pytest.mark.parametrize("method", list(GRAD_REFS))
def test_gradient_cams_callable_target(method):
    """A custom score y = logit_1 - 0.5 logit_3 has gradient (W[1] - 0.5 W[3]) reshaped."""
    model, x = make_net("flat"), inputs()
    a = activations(model, x)
    coeffs = np.zeros((BATCH, CLASSES))
    coeffs[:, 1], coeffs[:, 3] = 1.0, -0.5
    g = analytic_grad(model, "flat", coeffs, a.shape)
    es = seethrough.explain(
        model, x, method, target=lambda out: out[:, 1] - 0.5 * out[:, 3], layer="features"
    )
    check(es, GRAD_REFS[method](a, g), None, logits_of(model, x))
    scores = (logits_of(model, x) * coeffs).sum(axis=1)
    for e, s in zip(es, scores, strict=True):
        assert e.target is None and e.probability is None
        assert e.score == pytest.approx(s, rel=1e-9)


@pytest.mark.parametrize("method", [*GRAD_REFS, "scorecam", "eigencam"])
def test_zero_conventions(method):
    """A dead channel (A_c = 0: XGrad-CAM's sum A_c = 0, a constant Score-CAM mask -> 0) and
    zero gradients (Grad-CAM++'s denominator 0 -> alpha 0) give finite maps equal to the
    references' conventions."""
    model, x = make_net("flat", head_scale=50.0), inputs()
    with torch.no_grad():
        model.features[2].weight[2] = 0.0
        model.features[2].bias[2] = -1.0  # channel 2 is 0 everywhere after the ReLU
        model.head[-1].weight.view(CLASSES, 6, 6, 6)[:, :, 0, :] = 0.0  # dy/dA = 0 on row 0
    with torch.no_grad():
        a = model.features(x).numpy()
    assert np.all(a[:, 2] == 0)
    logits = logits_of(model, x)
    classes = resolve(logits, [4, 0, 1])
    if method == "scorecam":
        expected = ref_scorecam(model, x, a, classes)
    elif method == "eigencam":
        expected = ref_eigencam(a)
    else:
        g = analytic_grad(model, "flat", one_hot(classes), a.shape)
        assert np.all(g[:, :, 0, :] == 0)
        expected = GRAD_REFS[method](a, g)
    es = seethrough.explain(model, x, method, target=[4, 0, 1], layer="features")
    assert all(np.isfinite(e.raw).all() and np.isfinite(e.map).all() for e in es)
    check(es, expected, classes, logits)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_cam_matches_head_weights(target):
    model, x = make_net("gap"), inputs()
    a = activations(model, x)
    logits = logits_of(model, x)
    classes = resolve(logits, target)
    expected = weighted(head_weight(model)[classes], a)  # sum_c W[k, c] A_c, no bias
    check(
        seethrough.explain(model, x, "cam", target=target, layer="features"),
        expected,
        classes,
        logits,
    )


@pytest.mark.parametrize("layer", ["features", "features.2"], ids=["relu", "signed"])
@pytest.mark.parametrize("head", ["gap", "flat"])
def test_eigencam_is_uncentred_first_component(head, layer):
    model, x = setup(head, layer)
    a = activations(model, x, layer)
    expected = ref_eigencam(a)
    # centring would change the map: make sure this test can tell the difference
    centred = a - a.mean(axis=(2, 3), keepdims=True)
    assert np.abs(ref_eigencam(centred) - expected).max() > 0.1 * np.abs(expected).max()
    logits = logits_of(model, x)
    for target in (None, [3, 1, 4]):  # class-agnostic map, but the target's score is reported
        es = seethrough.explain(model, x, "eigencam", target=target, layer=layer)
        check(es, expected, resolve(logits, target), logits)


@pytest.mark.parametrize(
    "head,layer", [("gap", "features"), ("flat", "features"), ("flat", "features.2")]
)
@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_scorecam_matches_reference(head, layer, target):
    """features.2 is the conv before the ReLU: signed activations, masks min-max scaled.

    The head is scaled so that the masked scores differ by O(1) and softmax weights are far
    from uniform (with the default init they all lie within 1% of 1/C).
    """
    model, x = setup(head, layer, head_scale=50.0)
    a = activations(model, x, layer)
    logits = logits_of(model, x)
    classes = resolve(logits, target)
    expected = ref_scorecam(model, x, a, classes)
    es = seethrough.explain(model, x, "scorecam", target=target, layer=layer)
    check(es, expected, classes, logits)


@pytest.mark.parametrize("batch_size", [1, 4, 5, 6, 7])
def test_scorecam_batch_size_does_not_change_weights(batch_size):
    """6 channels in chunks of 1, 4 (+2), 5 (+1), 6 and 7 (one partial chunk)."""
    model, x = make_net("flat"), inputs()
    a = activations(model, x)
    logits = logits_of(model, x)
    classes = resolve(logits, [4, 0, 1])
    es = seethrough.explain(
        model, x, "scorecam", target=[4, 0, 1], layer="features", batch_size=batch_size
    )
    check(es, ref_scorecam(model, x, a, classes), classes, logits)


# ------------------------------------------------------------------------ 2. axioms and relations


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_relations_on_gap_head(target):
    model, x = make_net("gap"), inputs()
    a = activations(model, x)
    classes = resolve(logits_of(model, x), target)
    z = a.shape[2] * a.shape[3]
    run = {
        m: seethrough.explain(model, x, m, target=target, layer="features")
        for m in ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
    }
    raw = {m: np.stack([e.raw for e in es]).astype(np.float64) for m, es in run.items()}
    maps = {m: np.stack([e.map for e in es]).astype(np.float64) for m, es in run.items()}
    assert np.abs(raw["cam"]).max() > 0
    # CAM = Grad-CAM * (h*w): the pooling's 1/(h*w) is the gradient; the factor is positive,
    # so the displayed maps (after ReLU and upsampling) keep the same relation
    assert_close(raw["cam"], raw["gradcam"] * z, what="CAM != Grad-CAM * h*w")
    assert_close(maps["cam"], maps["gradcam"] * z, what="CAM map != Grad-CAM map * h*w")
    # HiResCAM = CAM / (h*w): element-wise g*A with g constant per channel
    assert_close(raw["hirescam"], raw["cam"] / z, what="HiResCAM != CAM / h*w")
    # XGrad-CAM: sum_ij (A/sum A) * g_c = g_c, so it equals Grad-CAM (dead channels add 0)
    assert_close(raw["xgradcam"], raw["gradcam"], what="XGrad-CAM != Grad-CAM on GAP head")
    w = head_weight(model)[classes]  # (N, C)
    # Layer-CAM: Grad-CAM with the (constant) gradients clipped at 0
    assert_close(raw["layercam"], weighted(np.maximum(w, 0) / z, a), what="Layer-CAM")
    # Grad-CAM++ with g_c = W_c / Z constant: alpha = 1 / (2 + g_c sum_ab A_c) and
    # sum_ab A_c = Z mean(A_c), so w_c = Z alpha ReLU(g_c) = ReLU(W_c) / (2 + W_c mean(A_c))
    pooled = a.mean(axis=(2, 3))
    expected = weighted(np.maximum(w, 0) / (2 + w * pooled), a)
    assert np.abs(expected - raw["gradcam"]).max() > 0.01 * np.abs(expected).max()
    assert_close(raw["gradcam++"], expected, what="Grad-CAM++ on GAP head")


@pytest.mark.parametrize(
    "method,head,layer",
    [
        ("cam", "gap", "features"),
        ("gradcam", "gap", "features"),
        ("gradcam", "flat", "features"),
        ("xgradcam", "flat", "features"),
        ("hirescam", "flat", "features"),
        # A >= 0 gives Eigen-CAM (Perron-Frobenius) and Score-CAM (softmax weights > 0) a
        # non-negative map: they need the signed pre-ReLU layer
        ("eigencam", "flat", "features.2"),
        ("scorecam", "flat", "features.2"),
    ],
)
def test_relu_false_keeps_the_sign(method, head, layer):
    model, x = setup(head, layer)

    def run(target, relu):
        return seethrough.explain(model, x, method, target=target, layer=layer, relu=relu)

    # the class with the most negative evidence somewhere in the batch
    raws = {k: np.stack([e.raw for e in run(k, False)]) for k in range(CLASSES)}
    k = min(raws, key=lambda c: raws[c].min())
    assert raws[k].min() < 0, "this case should have negative evidence"
    signed, positive = run(k, False), run(k, True)
    assert min(e.map.min() for e in signed) < 0
    for s, p in zip(signed, positive, strict=True):
        assert s.params["relu"] is False and p.params["relu"] is True
        np.testing.assert_array_equal(s.raw, p.raw)  # relu only changes the displayed map
        assert_map_is_upsampled(s, relu=False)
        assert_map_is_upsampled(p, relu=True)
        assert p.map.min() >= 0


# ------------------------------------------- 3. Grad-CAM++ with true higher-order derivatives


@pytest.mark.parametrize("head", ["flat", "mlp"])
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.func warns about torch.jit.script
def test_gradcampp_general_closed_form(head):
    """Eq. 19 of the paper with real derivatives of Y = exp(y) w.r.t. each A_c[i, j].

    alpha = d2Y / (2 d2Y + sum_ab A_c[a, b] d3Y)   (derivatives at (i, j), 0 where den = 0)
    w_c = sum_ij alpha ReLU(dY/dA_c[i, j]);  the library leaves out the positive factor exp(y)
    that multiplies every w_c of an image, so raw * exp(y) must equal the reference.
    """
    c, side = 3, 3
    model = make_net(head, channels=c, size=6, stride=2)  # layer (3, 3, 3): 27 variables
    for p in model.parameters():
        p.requires_grad_(False)
    x = inputs(2, size=6)
    targets = [1, 3]
    es = seethrough.explain(model, x, "gradcam++", target=targets, layer="features")
    factors = []
    for i, k in enumerate(targets):
        a0 = model.features(x[i : i + 1]).reshape(-1)
        n = a0.numel()

        def big_y(a, k=k):
            return torch.exp(model.head(a.reshape(1, c, side, side))[0, k])

        d1 = torch.func.grad(big_y)(a0)
        hess = torch.func.hessian(big_y)
        d2 = hess(a0).diagonal()
        idx = torch.arange(n)
        d3 = torch.func.jacfwd(hess)(a0)[idx, idx, idx]  # d3Y / dA_ij^3
        assert d3.abs().max() > 0
        a = a0.reshape(c, side * side)
        d1, d2, d3 = (d.reshape(c, side * side) for d in (d1, d2, d3))
        den = 2 * d2 + a.sum(dim=1, keepdim=True) * d3
        alpha = torch.where(den != 0, d2 / torch.where(den != 0, den, 1), 0)
        w = (alpha * torch.relu(d1)).sum(dim=1)
        ref = (w[:, None] * a).sum(dim=0).reshape(side, side).numpy()
        y = float(model(x[i : i + 1])[0, k])
        factors.append(np.exp(y))
        assert np.abs(ref).max() > 0
        assert_close(es[i].raw.astype(np.float64) * np.exp(y), ref, what=f"image {i}")
        # the same up to normalisation by the max (what a viewer sees)
        assert_close(es[i].raw / es[i].raw.max(), ref / ref.max(), what=f"image {i} (normalised)")
    assert abs(factors[0] / factors[1] - 1) > 1e-3  # a per-image factor, not a global one


# ------------------------------------------------------------ 4. pytorch-grad-cam as an oracle

ORACLES = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "scorecam": "ScoreCAM",
}
# pytorch-grad-cam's EigenCAM centres the activations before the SVD (the paper does not), so
# Eigen-CAM is not compared with it; test_eigencam_is_uncentred_first_component covers it.


# pytorch-grad-cam min-max normalises ReLU(cam) at the layer's resolution, resizes with cv2
# (INTER_LINEAR, half-pixel centres: within 2e-7 of torch's bilinear, align_corners=False) and
# normalises again; min-max commutes with bilinear resizing, so its output equals min-max of our
# .map up to float32 rounding (observed <= 5e-6, on maps with a small range) and its epsilons
# (1e-7 in the normalisations and in XGrad-CAM's denominator). 1e-4 leaves a 10x margin; a wrong
# formula moves normalised maps by 1e-2 or more.
ORACLE_ATOL = 1e-4


def oracle_setup(kind: str, method: str):
    """A float32 model with random weights, its layer module, an input batch and 3 classes."""
    if kind == "tiny":  # conftest's CNN: conv-relu-conv-BN-relu, GAP + Linear; 8x8 layer
        model = make_tiny()
        x = inputs(BATCH, size=16, dtype=torch.float32)
    else:
        # Score-CAM upsamples channels to masks: pytorch-grad-cam uses UpsamplingBilinear2d
        # (align_corners=True), the library align_corners=False (checked in float64 above). With a
        # stride-1 layer at the input resolution both upsamplings are the identity.
        stride = 1 if method == "scorecam" else 2
        model = make_net(kind, seed=4, dtype=torch.float32, stride=stride)
        x = inputs(BATCH, dtype=torch.float32, seed=4)
    if method == "gradcam++":
        # pytorch-grad-cam adds eps=1e-6 to alpha's denominator 2 g^2 + sum(A) g^3. With g = W/(h*w)
        # ~ 5e-3 on a GAP head that is a 4% error (measured: up to 8e-2 on the normalised map,
        # shrinking as 1/scale^2 when the head is scaled). Scaling the head by 100 makes g^2 >> eps
        # (measured <= 1.1e-5); both sides then explain the same scaled model.
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            head.weight.mul_(100)
    logits = logits_of(model, x)
    classes = [int(np.argsort(-logits[i])[r]) for i, r in enumerate([0, 1, 0])]  # top, 2nd, top
    return model, model.features, x, classes


def minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    assert span > 0, "degenerate map"
    return (m - m.min()) / span


# (conftest's tiny has a stride-2 layer: its Score-CAM masks would differ by align_corners)
ORACLE_CASES = [
    (m, k) for m in ORACLES for k in ("tiny", "gap", "flat") if (m, k) != ("scorecam", "tiny")
]


@pytest.mark.parametrize("method,kind", ORACLE_CASES)
def test_against_pytorch_grad_cam(method, kind):
    cams = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer, x, classes = oracle_setup(kind, method)
    params = {"batch_size": 4} if method == "scorecam" else {}
    ours = seethrough.explain(model, x, method, target=classes, layer="features", **params)
    with getattr(cams, ORACLES[method])(model=model, target_layers=[layer]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in classes])
    assert theirs.shape == (BATCH, *x.shape[-2:])
    for e, t in zip(ours, theirs, strict=True):
        diff = np.abs(minmax(e.map.astype(np.float64)) - t).max()
        assert diff < ORACLE_ATOL, f"{method} on {kind}: max |diff| = {diff:.2e}"


# --------------------------------------------------------------------------------- 5. errors


def test_cam_needs_gap_linear_head():
    model, x = make_net("flat"), inputs()
    with pytest.raises(MethodNotApplicableError, match="gradcam"):
        seethrough.explain(model, x, "cam", layer="features")


def test_cam_refuses_a_linear_layer_that_is_not_the_last():
    """GAP -> Linear -> ReLU -> Linear: the first linear sees the pooled map but is no classifier."""
    model = make_tiny()
    model.fc = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    with pytest.raises(MethodNotApplicableError, match="gradcam"):
        seethrough.explain(model, inputs(2, 16, torch.float32), "cam", layer="features")


def test_cam_refuses_callable_target():
    model, x = make_net("gap"), inputs()
    with pytest.raises(MethodNotApplicableError):
        seethrough.explain(model, x, "cam", target=lambda out: out[:, 0], layer="features")


def test_unknown_layer_suggests_close_name():
    with pytest.raises(UnknownLayerError, match="Did you mean: .*features") as info:
        seethrough.explain(make_tiny(), inputs(2, 16, torch.float32), "gradcam", layer="featurs")
    assert "featurs" in str(info.value)


@pytest.mark.parametrize("method", list(GRAD_REFS) + ["cam", "scorecam", "eigencam"])
def test_non_spatial_layer_is_refused(method):
    with pytest.raises(MethodNotApplicableError, match="fc"):
        seethrough.explain(make_tiny(), inputs(2, 16, torch.float32), method, layer="fc")


@pytest.mark.parametrize(
    "fn", [lambda out: out, lambda out: out[:, :2], lambda out: 1.0], ids=["NK", "N2", "float"]
)
def test_target_callable_wrong_shape(fn):
    with pytest.raises(InvalidTargetError):
        seethrough.explain(make_tiny(), inputs(2, 16, torch.float32), "gradcam", target=fn)


@pytest.mark.parametrize("target", [4, -1, 99, [0, 7], "cat"])
def test_class_out_of_range(target):
    with pytest.raises(UnknownClassError):
        seethrough.explain(make_tiny(), inputs(2, 16, torch.float32), "gradcam", target=target)


@pytest.mark.parametrize(
    "method,params,match",
    [
        ("gradcam", {"rellu": False}, "relu"),
        ("cam", {"batch_size": 4}, "batch_size"),
        ("scorecam", {"batch_size": 0}, ">= 1"),
        ("gradcam++", {"relu": "maybe"}, "bool"),
    ],
)
def test_invalid_parameter(method, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        seethrough.explain(make_tiny(), inputs(2, 16, torch.float32), method, **params)
