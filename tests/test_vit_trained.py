"""A tiny ViT trained in the test on a task whose answer has a known location.

Images are low-contrast clutter with one bright shape at a random position; the class is the
shape (see ``tests/_synthetic.py``). After 15 epochs of Adam (about 15 s on one core) the model
classifies 99% of held-out images correctly, so the evidence for its answer is the object. On
held-out images it classifies correctly, the pointing game checks that the argmax of
``Explanation.map`` falls in a patch that contains the object; the same model before training is
the negative control.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import timm
import torch

import seethrough

from ._synthetic import (
    CLASSES,
    accuracy,
    make_shapes,
    one_thread,
    patch_cells,
    pointing_hits,
    train,
)

pytestmark = pytest.mark.slow

PATCH = 8
ARCH = dict(img_size=32, patch_size=PATCH, embed_dim=32, depth=3, num_heads=4, num_classes=CLASSES)
N_TRAIN, N_TEST, N_EVAL = 3000, 500, 100
METHODS = ("attention_rollout", "layercam", "hirescam", "gradcam", "gradcam++", "xgradcam")


@pytest.fixture(scope="module")
def task() -> SimpleNamespace:
    x_train, y_train, _ = make_shapes(N_TRAIN, seed=1)
    x_test, y_test, masks = make_shapes(N_TEST, seed=2)
    with one_thread(), torch.random.fork_rng():  # the global RNG is restored afterwards
        torch.manual_seed(0)
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **ARCH)
        untrained = copy.deepcopy(model).eval()
        train(model, x_train, y_train, epochs=15, lr=1e-3, batch=64, seed=0)
        with torch.no_grad():
            correct = (model(x_test).argmax(1) == y_test).nonzero()[:N_EVAL, 0]
        accuracies = accuracy(model, x_test, y_test), accuracy(untrained, x_test, y_test)
    cells = patch_cells(masks[correct.numpy()], PATCH)
    return SimpleNamespace(
        model=model,
        untrained=untrained,
        accuracy=accuracies[0],
        untrained_accuracy=accuracies[1],
        x=x_test[correct],
        targets=y_test[correct].tolist(),
        cells=cells,
        chance=float(cells.mean()),  # a uniformly random pointer's hit rate
    )


@pytest.fixture(scope="module")
def hit_rates(task) -> dict[tuple[str, str], float]:
    """Pointing-game hit rate per (model, method), on the same images and targets."""
    rates = {}
    with one_thread():
        for name, model in (("trained", task.model), ("untrained", task.untrained)):
            for method in METHODS:
                explanations = seethrough.explain(model, task.x, method, target=task.targets)
                hits = pointing_hits([e.map for e in explanations], task.cells)
                rates[name, method] = float(hits.mean())
    print(
        f"\nchance {task.chance:.2f}, accuracy {task.accuracy:.3f} ({task.untrained_accuracy:.3f})"
    )
    for method in METHODS:
        trained, untrained = rates["trained", method], rates["untrained", method]
        print(f"{method:>18}: trained {trained:.2f}, untrained {untrained:.2f}")
    return rates


def test_the_vit_learns_the_task(task):
    assert len(task.targets) == N_EVAL
    assert task.accuracy > 0.9, f"training failed: held-out accuracy {task.accuracy:.3f}"
    assert task.untrained_accuracy < 0.5


def test_the_evaluation_images_make_pointing_hard_by_chance(task):
    # an 8x8 object at a random position touches 1 to 4 of the 16 patches
    assert 0.1 < task.chance < 0.3


# Hit rates on the 100 images, with these seeds, then the range over five other seeds (the same
# code with seeds 1-5): rollout 0.97 (0.94-1.0), layercam 0.86 (0.59-0.71), hirescam 0.77
# (0.61-0.69), xgradcam 0.54 (0.54-0.64); the untrained model 0.17-0.53; chance 0.2. The
# thresholds hold for all six. Grad-CAM and Grad-CAM++ (0.44 and 0.47 here, 0.29-0.44 on the
# other seeds) are not asserted: on some seeds they do no better than the untrained model.
@pytest.mark.parametrize(
    "method, at_least, margin",
    [
        ("attention_rollout", 0.9, 0.3),
        ("layercam", 0.55, 0.2),
        ("hirescam", 0.55, 0.2),
        ("xgradcam", 0.45, 0.15),
    ],
)
def test_explanations_of_the_trained_vit_point_at_the_object(
    task, hit_rates, method, at_least, margin
):
    trained, untrained = hit_rates["trained", method], hit_rates["untrained", method]
    assert trained >= at_least, f"{method} hits the object in {trained:.2f} of the images"
    assert trained >= 2 * task.chance
    assert trained >= untrained + margin, (
        f"{method}: trained {trained:.2f}, untrained {untrained:.2f}"
    )


def test_the_best_cam_points_at_the_object_in_most_images(hit_rates):
    assert max(hit_rates["trained", m] for m in ("layercam", "hirescam")) >= 0.6


def test_the_untrained_vit_does_not_point_at_the_object(task, hit_rates):
    for method in METHODS:
        assert hit_rates["untrained", method] < 0.6, method
