"""Deep Feature Factorization: factors, concept classification, joint concepts, real model, viz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.models import Preprocessing, VisionModel
from seethrough.viz.concepts import concept_colors, concept_legend, concept_overlay

from ..conftest import make_tiny
from ._activations import layer_output

CAT_INDICES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_factors_reconstruct_the_activations(tiny, tiny_input):
    out = seethrough.explain(tiny, tiny_input, "dff", n_concepts=4)
    acts = layer_output(tiny, tiny_input, "features")  # post-ReLU (N, 8, 8, 8)
    for i, e in enumerate(out):
        w = e.extras["concepts"]  # (K, h, w)
        h = e.extras["concept_embeddings"]  # (K, C)
        assert w.shape == (4, 8, 8) and h.shape == (4, 8)
        assert (w >= 0).all() and (h >= 0).all()
        np.testing.assert_allclose(w.reshape(4, -1).max(axis=1), 1.0, rtol=1e-6)
        v = acts[i].reshape(8, -1).T.numpy()  # (h*w, C)
        rel = np.linalg.norm(v - w.reshape(4, -1).T @ h) / np.linalg.norm(v)
        assert e.stats["reconstruction_error"] == pytest.approx(rel, rel=1e-4, abs=1e-6)
        assert rel < 0.2  # 4 concepts for 8 channels
        np.testing.assert_allclose(e.raw, w.max(axis=0), rtol=1e-6)
        assert e.layer == "features"


def test_more_concepts_fit_better(tiny, tiny_input):
    errors = [
        seethrough.explain(tiny, tiny_input[0], "dff", n_concepts=k).stats["reconstruction_error"]
        for k in (1, 3, 6)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_concepts_are_classified_by_the_head(tiny, tiny_input):
    labels = [f"thing {i}" for i in range(4)]
    model = VisionModel(tiny, Preprocessing(size=16), labels, name="t", source="t", weights="t")
    out = seethrough.explain(model, tiny_input, "dff", n_concepts=3, top_k=2)
    for e in out:
        emb = torch.from_numpy(e.extras["concept_embeddings"])
        with torch.no_grad():
            probs = tiny.fc(emb).softmax(dim=1)
        expected_scores, expected_classes = probs.topk(2, dim=1)
        np.testing.assert_array_equal(e.extras["concept_classes"], expected_classes.numpy())
        np.testing.assert_allclose(e.extras["concept_scores"], expected_scores.numpy(), rtol=1e-5)
        names = np.array(labels)[e.extras["concept_classes"]]
        np.testing.assert_array_equal(e.extras["concept_labels"], names)


def test_no_head_no_classes(tiny, tiny_input):
    e = seethrough.explain(tiny, tiny_input[0], "dff", layer="features.1", n_concepts=3)
    assert e.extras["concepts"].shape == (3, 16, 16)
    assert "concept_classes" not in e.extras and "concept_labels" not in e.extras


def test_joint_concepts_are_shared(tiny, tiny_input):
    out = seethrough.explain(tiny, tiny_input, "dff", n_concepts=3, joint=True)
    first = out[0].extras["concept_embeddings"]
    for e in out[1:]:
        np.testing.assert_array_equal(e.extras["concept_embeddings"], first)
        np.testing.assert_array_equal(e.extras["concept_classes"], out[0].extras["concept_classes"])
    assert not np.array_equal(out[0].extras["concepts"], out[1].extras["concepts"])
    stacked = np.stack([e.extras["concepts"] for e in out])  # scaled over the whole batch
    np.testing.assert_allclose(stacked.max(axis=(0, 2, 3)), 1.0, rtol=1e-6)
    alone = seethrough.explain(tiny, tiny_input, "dff", n_concepts=3)
    assert not np.array_equal(
        alone[0].extras["concept_embeddings"], alone[1].extras["concept_embeddings"]
    )


def test_deterministic_in_float64():
    model = make_tiny(dtype=torch.float64)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a, b = (seethrough.explain(model, x, "dff") for _ in range(2))
    for ea, eb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ea.extras["concepts"], eb.extras["concepts"])
        assert ea.stats == eb.stats


@pytest.mark.slow
def test_real_model_finds_a_cat_concept(lite0):
    e = seethrough.explain(lite0, "sample:chelsea", "dff", n_concepts=3)
    assert e.layer == "bn2" and e.extras["concepts"].shape == (3, 7, 7)
    classes = e.extras["concept_classes"]
    assert classes.shape == (3, 3)
    cat_concepts = [k for k in range(3) if CAT_INDICES & set(classes[k].tolist())]
    assert cat_concepts, f"no cat class among the concepts' top classes {classes.tolist()}"
    assert any("cat" in str(name) for name in e.extras["concept_labels"][cat_concepts[0]])


def test_overlay_takes_the_strongest_concepts_colour():
    image = np.full((12, 12, 3), 90, np.uint8)
    concepts = np.zeros((3, 12, 12))
    concepts[0, :, :6] = 1.0
    concepts[1, :6, :] = 0.5  # weaker than concept 0 where they overlap, strongest elsewhere
    concepts[2, 6:, 6:] = 2.0
    concepts[1, 0, 0] = 0.0  # concept 1's maximum stays 0.5 (normalised to 1)
    out = concept_overlay(image, concepts, alpha=1.0)
    colors = np.rint(concept_colors(3) * 255).astype(np.uint8)
    normed = concepts / concepts.max(axis=(1, 2), keepdims=True)
    strongest = normed.argmax(axis=0)
    painted = normed.max(axis=0) == 1.0  # alpha=1 at full strength: the pure colour
    np.testing.assert_array_equal(out[painted], colors[strongest[painted]])
    np.testing.assert_array_equal(out[normed.max(axis=0) == 0], 90)  # no concept: image kept
    assert len({tuple(c) for c in colors}) == 3


def test_overlay_blends_with_strength_and_upsamples():
    image = np.zeros((8, 8, 3), np.uint8)
    concepts = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.5]]])
    out = concept_overlay(image, concepts, alpha=0.5, colors=["red", "blue"])
    assert out.shape == (8, 8, 3)
    assert tuple(out[0, 0]) == (128, 0, 0) and tuple(out[-1, -1]) == (0, 0, 128)
    assert (out[..., 1] == 0).all()  # only red and blue were painted


def test_legend_lists_every_concept():
    labels = np.array([["tabby", "tiger cat"], ["television", "screen"]])
    fig = concept_legend(labels, np.array([[0.6, 0.3], [0.2, 0.1]]))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["1: tabby 0.60, tiger cat 0.30", "2: television 0.20, screen 0.10"]
    assert len(fig.axes[0].patches) == 2
