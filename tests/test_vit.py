"""Vision transformers: token folding, default layer, CAMs without user code, attention rollout."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.core.tokens import prefix_and_grid, tokens_to_map
from seethrough.errors import MethodNotApplicableError


def small_vit(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2, num_classes=5)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**args, **kw}).eval()


@pytest.fixture(scope="module")
def vit():
    return small_vit()


def test_prefix_and_grid():
    assert prefix_and_grid(small_vit(), 17) == (1, (4, 4))
    assert prefix_and_grid(small_vit(reg_tokens=4), 21) == (5, (4, 4))
    plain = torch.nn.Linear(2, 2)
    assert prefix_and_grid(plain, 197) == (1, (14, 14))
    assert prefix_and_grid(plain, 198) == (2, (14, 14))
    with pytest.raises(MethodNotApplicableError):
        prefix_and_grid(plain, 3)


def test_tokens_to_map_keeps_patch_order():
    t = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # 1 prefix + 2x2 patches
    m = tokens_to_map(t, torch.nn.Identity())
    assert m.shape == (2, 3, 2, 2)
    assert torch.equal(m[0, :, 0, 1], t[0, 2])  # patch 1 = row 0, column 1


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam"]
)
def test_cams_run_on_vits_with_no_user_code(vit, method):
    x = torch.rand(2, 3, 32, 32)
    out = seethrough.explain(vit, x, method)
    assert out[0].layer == "blocks.2.norm1"
    assert out[0].raw.shape == (4, 4) and out[0].map.shape == (32, 32)
    assert np.isfinite(out[0].map).all() and count_hooks(vit) == 0


def test_gradcam_on_vit_matches_a_manual_token_computation(vit):
    x = torch.rand(1, 3, 32, 32)
    e = seethrough.explain(vit, x[0], "gradcam", target=3, relu=False)
    store = {}
    handle = vit.blocks[2].norm1.register_forward_hook(lambda m, a, o: store.setdefault("t", o))
    tokens_in = x.clone().requires_grad_(True)
    try:
        score = vit(tokens_in)[0, 3]
    finally:
        handle.remove()
    t = store["t"]
    (g,) = torch.autograd.grad(score, t)
    acts, grads = t[0, 1:].detach(), g[0, 1:]  # (16, D) patch tokens
    expected = (acts * grads.mean(0)).sum(1).reshape(4, 4)
    np.testing.assert_allclose(e.raw, expected.numpy(), rtol=1e-4, atol=1e-7)


def manual_rollout(vit, x, discard_ratio, fusion):
    """Attention matrices computed directly from the blocks' weights, then rolled out in numpy."""
    with torch.no_grad():
        tokens = vit.patch_embed(x)
        tokens = vit._pos_embed(tokens)
        tokens = vit.norm_pre(tokens)
        result = None
        for blk in vit.blocks:
            h = blk.norm1(tokens)
            b, n, _ = h.shape
            qkv = blk.attn.qkv(h).reshape(b, n, 3, blk.attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k = qkv[0], qkv[1]
            attn = ((q * blk.attn.scale) @ k.transpose(-2, -1)).softmax(-1).double().numpy()[0]
            tokens = blk(tokens)
            fused = {"mean": attn.mean(0), "max": attn.max(0), "min": attn.min(0)}[fusion]
            flat = fused.reshape(-1).copy()
            drop = int(flat.size * discard_ratio)
            weakest = np.argsort(flat, kind="stable")[:drop]
            flat[weakest[weakest != 0]] = 0
            a = (flat.reshape(n, n) + np.eye(n)) / 2
            a = a / a.sum(-1, keepdims=True)
            result = a if result is None else a @ result
    return result[0, 1:].reshape(4, 4)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5])
def test_rollout_matches_direct_matrix_computation(vit, fusion, discard):
    x = torch.rand(1, 3, 32, 32)
    before = [blk.attn.fused_attn for blk in vit.blocks]
    e = seethrough.explain(
        vit, x[0], "attention_rollout", head_fusion=fusion, discard_ratio=discard
    )
    np.testing.assert_allclose(e.raw, manual_rollout(vit, x, discard, fusion), rtol=1e-5, atol=1e-7)
    assert [blk.attn.fused_attn for blk in vit.blocks] == before


def test_rollout_restores_fused_attention_after_an_exception(vit):
    before = [blk.attn.fused_attn for blk in vit.blocks]

    def failing(output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        seethrough.explain(vit, torch.rand(1, 3, 32, 32), "attention_rollout", target=failing)
    assert [blk.attn.fused_attn for blk in vit.blocks] == before and count_hooks(vit) == 0


def test_rollout_needs_attention_modules(tiny, tiny_input):
    with pytest.raises(MethodNotApplicableError, match="vision-transformer"):
        seethrough.explain(tiny, tiny_input, "attention_rollout")


def test_timm_vit_loads_by_name_and_explains():
    vm = seethrough.load_model("timm:vit_tiny_patch16_224", weights="none")
    e = seethrough.explain(vm, "sample:chelsea", "gradcam")
    assert e.layer == "blocks.11.norm1" and e.map.shape == (224, 224)


def test_rollout_without_class_token_averages_the_token_rows():
    vit = small_vit(class_token=False, global_pool="avg")
    x = torch.rand(1, 3, 32, 32)
    e = seethrough.explain(vit, x[0], "attention_rollout", discard_ratio=0.0)
    store = []
    handles = [
        blk.attn.attn_drop.register_forward_hook(lambda m, a, o: store.append(o))
        for blk in vit.blocks
    ]
    fused = [blk.attn.fused_attn for blk in vit.blocks]
    try:
        for blk in vit.blocks:
            blk.attn.fused_attn = False
        with torch.no_grad():
            vit(x)
    finally:
        for h, blk, f in zip(handles, vit.blocks, fused, strict=True):
            h.remove()
            blk.attn.fused_attn = f
    result = None
    for a in store:
        a = (a.mean(1)[0].double() + torch.eye(16, dtype=torch.float64)) / 2
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    np.testing.assert_allclose(e.raw, result.mean(0).reshape(4, 4).numpy(), rtol=1e-5)
