"""The newer CAM methods and transformer views against their papers' formulas, computed by hand.

Each test builds a small float64 model (the ones of ``test_cam_reference``: a conv stack whose
``features`` output is the explained layer, then a head), computes the method's map with numpy
or plain autograd on the model's parts (no hooks, no seethrough code), and compares it with
``Explanation.raw``. Where a method draws noise the test draws the same noise from the same seed
with :func:`seethrough.core.noise.normal_noise` (the library's documented recipe), so the
comparison is exact. Tolerances: the library returns float32, so rtol=1e-5 (see
``test_cam_reference``); any formula error moves values by far more.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.core.noise import normal_noise
from seethrough.errors import InvalidParameterError, MethodNotApplicableError

from .test_cam_reference import (
    Net,
    activations,
    assert_close,
    head_weight,
    inputs,
    logits_of,
    make_net,
    one_hot,
    resolve,
    weighted,
)


def unit_masks(a: np.ndarray, size: int) -> torch.Tensor:
    """Score-CAM's masks of one image's ``(C, h, w)`` activations: bilinear upsampling
    (align_corners=False) to ``size``, then min-max scaling per channel, ``(C, 1, H, W)``."""
    up = F.interpolate(torch.from_numpy(a)[:, None], size=(size, size), mode="bilinear")
    lo = up.amin(dim=(2, 3), keepdim=True)
    span = up.amax(dim=(2, 3), keepdim=True) - lo
    return (up - lo) / span


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------- Ablation-CAM


@pytest.mark.parametrize("target", [None, [4, 0, 1]], ids=["top", "per-image"])
def test_ablationcam_weights_are_the_relative_score_drop(target):
    """GAP + linear: zeroing channel c removes exactly W[k, c] * mean(A_c) from the logit, so
    w_c = W[k, c] mean(A_c) / y_k."""
    model, x = make_net("gap"), inputs()
    a, logits = activations(model, x), logits_of(model, x)
    classes = resolve(logits, target)
    y = logits[np.arange(len(x)), classes]
    drop = head_weight(model)[classes] * a.mean(axis=(2, 3))
    expected = weighted(drop / y[:, None], a)
    es = seethrough.explain(
        model, x, "ablationcam", target=target, layer="features", relu=False, batch_size=5
    )
    for e, ref in zip(es, expected, strict=True):
        assert_close(e.raw, ref)


def test_ablationcam_on_a_nonlinear_head_matches_explicit_ablations():
    """Any head: y^c computed by running the head on A with channel c set to zero."""
    model, x = make_net("mlp"), inputs(n=2)
    a = torch.from_numpy(activations(model, x))
    with torch.no_grad():
        y = model.head(a)[:, 0]
        raw = []
        for i in range(len(x)):
            ablated = a[i].repeat(a.shape[1], 1, 1, 1)
            ablated[torch.arange(a.shape[1]), torch.arange(a.shape[1])] = 0
            w = (y[i] - model.head(ablated)[:, 0]) / y[i]
            raw.append(torch.einsum("c,chw->hw", w, a[i]))
    es = seethrough.explain(model, x, "ablationcam", target=0, layer="features", relu=False)
    for e, ref in zip(es, raw, strict=True):
        assert_close(e.raw, ref.numpy())


class SkipNet(torch.nn.Module):
    """The explained layer ``c2``'s output meets an earlier tensor after it: added (a residual,
    which broadcasts over copies made at the layer) or concatenated (which does not)."""

    def __init__(self, join: str) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.join = join
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 if join == "add" else 8, 3)
        self.double().eval()

    def tail(self, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z = a + h if self.join == "add" else torch.cat([a, h.expand(len(a), -1, -1, -1)], 1)
        return self.fc(torch.relu(z).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))
        if self.join == "add":
            return self.fc(torch.relu(self.c2(h) + h).mean(dim=(2, 3)))
        return self.fc(torch.relu(torch.cat([self.c2(h), h], 1)).mean(dim=(2, 3)))


@pytest.mark.parametrize("join", ["add", "cat"])
def test_ablationcam_with_an_earlier_tensor_after_the_layer(join):
    """A residual input broadcasts over the copies made at the layer; a concatenation cannot,
    and the input is repeated instead: both give the explicit ablations."""
    model, x = SkipNet(join), 2 * inputs(n=2) - 1
    with torch.no_grad():
        h = torch.relu(model.c1(x))
        a = model.c2(h)
        y = model.tail(a, h)[:, 1]
        expected = []
        for i in range(len(x)):
            copies = a[i].repeat(4, 1, 1, 1)
            copies[torch.arange(4), torch.arange(4)] = 0
            w = (y[i] - model.tail(copies, h[i : i + 1])[:, 1]) / y[i]
            expected.append(torch.einsum("c,chw->hw", w, a[i]).numpy())
    es = seethrough.explain(model, x, "ablationcam", target=1, layer="c2", relu=False)
    for e, ref in zip(es, expected, strict=True):
        assert_close(e.raw, ref)
    assert count_hooks(model) == 0


# ----------------------------------------------------------------------- element-wise Grad-CAM


@pytest.mark.parametrize("layer", ["features", "features.2"])
def test_gradcam_elementwise_formula(layer):
    """flat head: dy_k/dA = W[k] reshaped; map = sum_c ReLU(g * A)."""
    model = make_net("flat", bias=(0.0, 0.0) if layer == "features.2" else (0.0, 0.3))
    x = inputs() if layer == "features" else 2 * inputs() - 1
    a, logits = activations(model, x, layer), logits_of(model, x)
    classes = resolve(logits, None)
    g = (one_hot(classes) @ head_weight(model)).reshape(a.shape)
    if layer == "features.2":  # through the last ReLU
        g = g * (a > 0)
    expected = np.maximum(g * a, 0).sum(axis=1)
    es = seethrough.explain(model, x, "gradcam_elementwise", layer=layer)
    for e, ref in zip(es, expected, strict=True):
        assert_close(e.raw, ref)
    # differs from HiResCAM (ReLU after the sum) wherever products of both signs meet
    hires = seethrough.explain(model, x, "hirescam", layer=layer, relu=False)
    assert any(np.abs(h.raw - e.raw).max() > 1e-3 for h, e in zip(hires, es, strict=True))


# -------------------------------------------------------------------------- SS-CAM and IS-CAM


def scorecam_family_reference(model: Net, x: torch.Tensor, k: int, coeffs, noise) -> np.ndarray:
    """w = softmax_c(1/n sum_i y_k(x * (coeff_i * H_c + noise_i,c))), raw = sum_c w_c A_c."""
    a = activations(model, x)
    raws = []
    for i in range(len(x)):
        masks = unit_masks(a[i], x.shape[-1])
        scores = []
        for p, coeff in enumerate(coeffs):
            extra = 0 if noise is None else noise[i][p]
            with torch.no_grad():
                scores.append(model(x[i : i + 1] * (coeff * masks + extra))[:, k].numpy())
        w = softmax(np.mean(scores, axis=0)[None])[0]
        raws.append(np.einsum("c,chw->hw", w, a[i]))
    return np.stack(raws)


def test_sscam_formula_with_the_seeded_noise():
    model, x = make_net("mlp", head_scale=4.0), inputs(n=2)
    n, c, std, seed = 3, 6, 0.5, 7
    noise = []
    for _ in range(len(x)):  # each image draws from the seed afresh, pass-major
        g = torch.Generator().manual_seed(seed)
        noise.append(normal_noise((n * c, 1, *x.shape[-2:]), g, x, std).view(n, c, 1, 12, 12))
    expected = scorecam_family_reference(model, x, 1, [1.0] * n, noise)
    params = {"n_samples": n, "noise": std, "seed": seed, "batch_size": 64}
    es = seethrough.explain(model, x, "sscam", target=1, layer="features", relu=False, **params)
    for e, ref in zip(es, expected, strict=True):
        assert_close(e.raw, ref)
    # the noise matters: another seed, another map
    other = seethrough.explain(
        model, x, "sscam", target=1, layer="features", **{**params, "seed": 8}
    )
    assert np.abs(other[0].raw - es[0].raw).max() > 1e-6


@pytest.mark.parametrize("batch_size", [4, 64])
def test_iscam_formula(batch_size):
    """Step i scales the masks by sum_{j<=i} j/n (as torchcam's ISCAM); the batch size of the
    masked inputs changes nothing."""
    model, x = make_net("mlp", head_scale=4.0), inputs(n=2)
    n = 4
    coeffs = [sum(j / n for j in range(1, i + 1)) for i in range(1, n + 1)]
    expected = scorecam_family_reference(model, x, 2, coeffs, None)
    es = seethrough.explain(
        model, x, "iscam", target=2, layer="features", relu=False, n_samples=n,
        batch_size=batch_size,
    )  # fmt: skip
    for e, ref in zip(es, expected, strict=True):
        assert_close(e.raw, ref)


def test_scorecam_family_with_one_clean_pass_is_scorecam():
    model, x = make_net("mlp", head_scale=4.0), inputs(n=2)
    base = seethrough.explain(model, x, "scorecam", layer="features")
    for method, params in (("sscam", {"noise": 0.0}), ("iscam", {})):
        # IS-CAM's single step has coefficient 1/1 = 1; SS-CAM without noise is Score-CAM
        out = seethrough.explain(model, x, method, layer="features", n_samples=1, **params)
        for e, b in zip(out, base, strict=True):
            assert_close(e.raw, b.raw, what=method)


# -------------------------------------------------------------------------- Smooth Grad-CAM++


def test_smoothgradcampp_formula_with_the_seeded_noise():
    """mlp head (the gradient depends on the input): D_p averaged over the noisy copies."""
    model, x = make_net("mlp", head_scale=4.0), inputs(n=2)
    n, level, seed = 3, 0.2, 5
    noise = normal_noise((n, *x.shape[1:]), torch.Generator().manual_seed(seed), x)
    sigma = (x.flatten(1).amax(1) - x.flatten(1).amin(1)) * level
    a = torch.from_numpy(activations(model, x))
    d = [torch.zeros_like(a) for _ in range(3)]
    for k in range(n):
        noisy = model.features(x + sigma.view(-1, 1, 1, 1) * noise[k]).detach().requires_grad_()
        (g,) = torch.autograd.grad(model.head(noisy)[:, 3].sum(), noisy)
        for p in range(3):
            d[p] += g ** (p + 1) / n
    denom = 2 * d[1] + a.sum(dim=(2, 3), keepdim=True) * d[2]
    alpha = torch.where(denom != 0, d[1] / denom, 0)
    w = (alpha * torch.relu(d[0])).sum(dim=(2, 3))
    expected = torch.einsum("nc,nchw->nhw", w, a).numpy()
    es = seethrough.explain(
        model, x, "smoothgradcam++", target=3, layer="features", relu=False, n_samples=n,
        noise=level, seed=seed,
    )  # fmt: skip
    for e, ref in zip(es, expected, strict=True):
        assert_close(e.raw, ref)


def test_smoothgradcampp_noisy_copies_in_batches_that_split_an_image(monkeypatch):
    """2 images x 3 copies in batches of 4: the second image's copies span two batches."""
    from seethrough.methods.cam import smoothgradcampp

    model, x = make_net("mlp", head_scale=4.0), inputs(n=2)
    params = {"target": 3, "layer": "features", "relu": False, "n_samples": 3, "seed": 5}
    whole = seethrough.explain(model, x, "smoothgradcam++", **params)
    monkeypatch.setattr(smoothgradcampp.batching, "auto_batch_size", lambda *a, **k: 4)
    split = seethrough.explain(model, x, "smoothgradcam++", **params)
    for a, b in zip(whole, split, strict=True):
        assert_close(a.raw, b.raw)


def test_smoothgradcampp_without_noise_is_gradcampp():
    model, x = make_net("flat"), inputs()
    ours = seethrough.explain(model, x, "smoothgradcam++", layer="features", noise=0.0)
    plain = seethrough.explain(model, x, "gradcam++", layer="features")
    for e, p in zip(ours, plain, strict=True):
        assert_close(e.raw, p.raw)


# ----------------------------------------------------------------------------------- KPCA-CAM


def kpca_reference(a: np.ndarray, kernel: str, gamma: float | None = None) -> np.ndarray:
    """Kernel PCA's first score of each position of the centred (h*w, C) activations."""
    out = []
    for ai in a:
        m = ai.reshape(ai.shape[0], -1).T
        m = m - m.mean(axis=0)
        gm = 1.0 / m.shape[1] if gamma is None else gamma
        dots = m @ m.T
        if kernel == "sigmoid":
            k = np.tanh(gm * dots + 1)
        elif kernel == "rbf":
            sq = (m**2).sum(1)
            k = np.exp(-gm * (sq[:, None] + sq[None] - 2 * dots))
        else:
            k = dots
        one = np.full_like(k, 1 / len(k))
        kc = k - one @ k - k @ one + one @ k @ one
        values, vectors = np.linalg.eigh(kc)
        score = vectors[:, -1] * np.sqrt(values[-1])
        score = score if score[np.abs(score).argmax()] > 0 else -score
        out.append(score.reshape(ai.shape[1:]))
    return np.stack(out)


@pytest.mark.parametrize(
    "kernel,gamma", [("sigmoid", None), ("rbf", 0.5), ("linear", None)], ids=str
)
def test_kpcacam_formula(kernel, gamma):
    model, x = make_net("gap"), inputs()
    a = activations(model, x)
    params = {"kernel": kernel} | ({} if gamma is None else {"gamma": gamma})
    es = seethrough.explain(model, x, "kpcacam", layer="features", relu=False, **params)
    for e, ref in zip(es, kpca_reference(a, kernel, gamma), strict=True):
        assert_close(e.raw, ref)


def test_kpcacam_linear_kernel_is_centred_eigencam():
    """With the linear kernel, the first kernel-PCA score is M_c v_1 (SVD of the centred M)."""
    model, x = make_net("gap"), inputs()
    a = activations(model, x)
    es = seethrough.explain(model, x, "kpcacam", layer="features", relu=False, kernel="linear")
    for e, ai in zip(es, a, strict=True):
        m = ai.reshape(ai.shape[0], -1).T
        m = m - m.mean(axis=0)
        proj = m @ np.linalg.svd(m)[2][0]
        np.testing.assert_allclose(np.abs(e.raw.ravel()), np.abs(proj), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------- FullGrad


class BiasNet(torch.nn.Module):
    """conv(bias) - BN - ReLU - conv(bias) - ReLU - GAP - linear, in float64."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.c2 = torch.nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.fc = torch.nn.Linear(5, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 1.5)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)
        self.double().eval()

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z1 = self.c1(x)
        z2 = self.bn(z1)
        z3 = self.c2(torch.relu(z2))
        return z1, z2, z3, self.fc(torch.relu(z3).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[-1]


def psi(t: torch.Tensor, dims: tuple[int, ...], size: int) -> torch.Tensor:
    t = t.abs()
    t = t - t.amin(dim=dims, keepdim=True)
    t = t / (t.amax(dim=dims, keepdim=True) + 1e-7)
    return F.interpolate(t, size=(size, size), mode="bilinear").sum(dim=1)


@pytest.mark.parametrize("normalize", ["layer", "channel"])
def test_fullgrad_formula(normalize):
    model = BiasNet()
    x = (2 * inputs(n=2) - 1).requires_grad_(True)
    *zs, out = model.parts(x)
    k = out.argmax(dim=1)
    grads = torch.autograd.grad(out.gather(1, k[:, None]).sum(), [x, *zs])
    bn = model.bn
    bn_bias = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    biases = [model.c1.bias, bn_bias, model.c2.bias]
    dims = (1, 2, 3) if normalize == "layer" else (2, 3)
    expected = psi(grads[0] * x, dims, 12)
    for b, g in zip(biases, grads[1:], strict=True):
        expected = expected + psi(b.view(1, -1, 1, 1) * g, dims, 12)
    es = seethrough.explain(model, x.detach(), "fullgrad", normalize=normalize)
    for e, ref in zip(es, expected.detach().numpy(), strict=True):
        assert_close(e.raw, ref)
        assert_close(e.map, ref)
    assert count_hooks(model) == 0


def test_fullgrad_bias_terms_complete_the_input_term():
    """Srinivas & Fleuret's full-gradient completeness on a ReLU network: y = <dy/dx, x> + sum
    over the biased layers of sum(b * dy/dz) + the linear head's bias, with the biases FullGrad
    reads (a conv's bias, a batch norm's folded ``beta - mu * gamma / sqrt(var + eps)``)."""
    from seethrough.methods.cam.fullgrad import _bias

    model = BiasNet()
    x = (2 * inputs(n=1) - 1).requires_grad_(True)
    *zs, out = model.parts(x)
    grads = torch.autograd.grad(out[0, 1], [x, *zs])
    total = (grads[0] * x).sum() + model.fc.bias[1]
    for module, g in zip([model.c1, model.bn, model.c2], grads[1:], strict=True):
        total = total + (_bias(module).view(1, -1, 1, 1) * g).sum()
    assert float(total.detach()) == pytest.approx(float(out[0, 1].detach()), rel=1e-9)
    assert (
        _bias(torch.nn.Linear(2, 2)) is None and _bias(torch.nn.Conv2d(1, 1, 1, bias=False)) is None
    )


# ------------------------------------------------------------------------- vision transformers


def small_vit(depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, embed_dim=16, depth=depth, num_heads=2, num_classes=4)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **args).double().eval()


def manual_attention_forward(vit, x: torch.Tensor):
    """The ViT's forward written out (timm's modules, none of its attention code): the tokens
    after each block, each block's attention probabilities and the logits."""
    tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    outs, attns = [], []
    for blk in vit.blocks:
        h = blk.norm1(tokens)
        b, n, d = h.shape
        heads = blk.attn.num_heads
        q, k, v = blk.attn.qkv(h).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attn = ((q * blk.attn.scale) @ k.transpose(-2, -1)).softmax(-1)
        mixed = (attn @ v).transpose(1, 2).reshape(b, n, d)
        tokens = tokens + blk.ls1(blk.attn.proj(mixed))
        tokens = tokens + blk.ls2(blk.mlp(blk.norm2(tokens)))
        outs.append(tokens)
        attns.append(attn)
    return outs, attns


def head_of(vit, tokens: torch.Tensor) -> torch.Tensor:
    return vit.head(vit.fc_norm(vit.norm(tokens)[:, 0]))


@pytest.mark.parametrize("depth,score", [(1, "layer"), (1, "output"), (2, "layer"), (2, "output")])
def test_legrad_formula(depth, score):
    """E^l = mean over heads and queries of ReLU(d s^l / d A^l), patch keys; map = mean_l E^l,
    with s^l the target predicted from block l's tokens (or the output's score)."""
    vit = small_vit(depth)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x.requires_grad_(True)
    outs, attns = manual_attention_forward(vit, x)
    logits = head_of(vit, outs[-1])
    np.testing.assert_allclose(logits.detach(), vit(x).detach(), rtol=1e-10)  # same network
    target = [1, 3]
    total = 0
    for tokens, attn in zip(outs, attns, strict=True):
        s = head_of(vit, tokens) if score == "layer" else logits
        (g,) = torch.autograd.grad(s[[0, 1], target].sum(), attn, retain_graph=True)
        total = total + torch.relu(g).mean(dim=(1, 2))[:, 1:].reshape(2, 4, 4)
    expected = (total / depth).detach().numpy()
    es = seethrough.explain(vit, x.detach(), "legrad", target=target, score=score)
    for e, ref in zip(es, expected, strict=True):
        assert_close(e.raw, ref)
    if depth == 1:  # the last layer's own prediction is the output
        other = "output" if score == "layer" else "layer"
        again = seethrough.explain(vit, x.detach(), "legrad", target=target, score=other)
        np.testing.assert_array_equal(again[0].raw, es[0].raw)
    assert count_hooks(vit) == 0 and all(blk.attn.fused_attn for blk in vit.blocks)


def test_legrad_last_layers_only():
    vit = small_vit(2)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    x.requires_grad_(True)
    outs, attns = manual_attention_forward(vit, x)
    (g,) = torch.autograd.grad(head_of(vit, outs[-1])[0, 2], attns[-1])
    expected = torch.relu(g).mean(dim=(1, 2))[0, 1:].reshape(4, 4).detach().numpy()
    e = seethrough.explain(vit, x[0].detach(), "legrad", target=2, layers=1)
    assert_close(e.raw, expected)


@pytest.mark.parametrize("block,head", [(-1, -1), (0, 1), (1, 0)])
def test_attention_heads_are_the_class_token_rows(block, head):
    vit = small_vit(2)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        _, attns = manual_attention_forward(vit, x)
    rows = attns[block][:, :, 0, 1:].reshape(2, 2, 4, 4).numpy()  # (N, heads, 4, 4)
    expected = rows.mean(axis=1) if head < 0 else rows[:, head]
    es = seethrough.explain(vit, x, "attention_heads", block=block, head=head)
    for i, e in enumerate(es):
        assert_close(e.raw, expected[i])
        assert_close(e.extras["heads"], rows[i])
        assert e.extras["heads"].shape == (2, 4, 4)
    assert count_hooks(vit) == 0


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "method,params,error,match",
    [
        ("attention_heads", {"block": 2}, InvalidParameterError, "block=2"),
        ("attention_heads", {"head": 2}, InvalidParameterError, "head=2"),
        ("attention_heads", {"head": -2}, InvalidParameterError, "head"),
        ("kpcacam", {"kernel": "laplace"}, InvalidParameterError, "kernel"),
        ("fullgrad", {"normalize": "image"}, InvalidParameterError, "normalize"),
        ("sscam", {"n_samples": 0}, InvalidParameterError, "n_samples"),
        ("ablationcam", {"batch_size": 0}, InvalidParameterError, "batch_size"),
    ],
)
def test_bad_parameters_are_typed_errors(method, params, error, match):
    model = small_vit(2) if method == "attention_heads" else make_net("gap")
    size = 16 if method == "attention_heads" else 12
    with pytest.raises(error, match=match):
        seethrough.explain(
            model, torch.rand(1, 3, size, size, dtype=torch.float64), method, **params
        )


@pytest.mark.parametrize("method", ["legrad", "attention_heads"])
def test_transformer_views_refuse_a_cnn(method):
    model = make_net("gap")
    with pytest.raises(MethodNotApplicableError, match="attention"):
        seethrough.explain(model, inputs(n=1), method)
    assert count_hooks(model) == 0
