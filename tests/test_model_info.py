"""The model description a method receives (``ModelInfo``) and image-valued parameters.

``explain`` describes the model once (``ModelInfo.of``) and hands that one object to the
method; a parameter declared with ``kind="image"`` gets a raw image preprocessed like the input,
whatever its name, without ``explain`` naming it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import seethrough
from seethrough import registry
from seethrough.errors import InvalidParameterError
from seethrough.methods.base import Context, Method, MethodResult
from seethrough.methods.params import BASELINE, HIDE
from seethrough.models import Preprocessing, VisionModel
from seethrough.models.vision_model import ModelInfo
from seethrough.registry import Param, get_method

from .conftest import make_tiny

LABELS = ["cat", "dog", "bird", "fish"]


def vision_model() -> VisionModel:
    return VisionModel(
        make_tiny(),
        Preprocessing(size=16),
        LABELS,
        name="tiny",
        source="test",
        weights="random",
        default_layer="features.0",
    )


def test_described_from_a_vision_model() -> None:
    vm = vision_model()
    info = ModelInfo.of(vm)
    assert info.module is vm.module
    assert info.name == "tiny"
    assert info.default_layer == "features.0"
    assert info.labels == tuple(LABELS)
    assert info.normalization == (tuple(vm.preprocessing.mean), tuple(vm.preprocessing.std))
    assert info.preprocessing is vm.preprocessing
    assert info.class_index is not None and info.class_index("dog") == 1
    assert info.label(2) == "bird" and info.label(None) is None


def test_described_from_a_bare_module() -> None:
    module = make_tiny()
    info = ModelInfo.of(module)
    assert info == ModelInfo(module, "TinyCNN")
    assert info.default_layer is None and info.class_index is None
    assert info.normalization is None and info.labels is None and info.preprocessing is None
    assert info.label(1) is None


def test_description_is_built_once_and_frozen() -> None:
    info = ModelInfo.of(vision_model())
    assert ModelInfo.of(info) is info
    with pytest.raises(AttributeError):
        info.name = "other"  # type: ignore[misc]
    with pytest.raises(InvalidParameterError, match="VisionModel or a torch.nn.Module"):
        ModelInfo.of("resnet18")  # type: ignore[arg-type]


def test_method_takes_the_description() -> None:
    """Called with a ModelInfo, a method takes its default layer from it (an explicit layer
    still wins)."""
    info = ModelInfo.of(vision_model())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    gradcam = get_method("gradcam").cls()
    assert gradcam(info, x).layer == "features.0"
    assert gradcam(info, x, layer="features.2").layer == "features.2"


def test_explain_describes_the_model_in_the_explanation() -> None:
    vm = vision_model()
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    e = seethrough.explain(vm, image, "gradcam", target="dog")
    assert (e.model, e.target, e.label, e.layer) == ("tiny", 1, "dog", "features.0")
    assert e.preprocessing == vm.preprocessing.describe()
    bare = seethrough.explain(vm.module, torch.rand(3, 16, 16), "gradcam", target=1)
    assert (bare.model, bare.label, bare.preprocessing) == ("TinyCNN", None, None)


def test_the_shared_image_parameters_are_of_image_kind() -> None:
    assert HIDE.kind == "image" and BASELINE.kind == "image"
    assert Param("x", 1.0, "a number").kind == "value"


class Backdrop(Method):
    """Records the value of its image parameter; its map is the input's channel mean."""

    name = "test_backdrop"
    title = "Backdrop probe"
    family = "perturbation"
    needs_gradients = False
    params = (
        Param("backdrop", 0.0, "an image behind the input", object, kind="image"),
        Param("plain", None, "any value, passed as given", object),
    )
    seen: ClassVar[dict[str, Any]] = {}

    def run(self, ctx: Context) -> MethodResult:
        type(self).seen.update(self.config)
        output = ctx.forward(ctx.x)
        target = ctx.resolve(output)
        mapped = ctx.x.mean(1)
        return ctx.result(mapped, mapped, output, target)


@pytest.fixture
def backdrop() -> type[Backdrop]:
    registry.register_method(Backdrop)
    Backdrop.seen.clear()
    try:
        yield Backdrop
    finally:
        registry.unregister_method(Backdrop.name)


def test_an_image_parameter_is_preprocessed_by_its_kind(backdrop: type[Backdrop]) -> None:
    vm = vision_model()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    behind = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    seethrough.explain(vm, image, backdrop.name, backdrop=behind, plain=behind)
    seen = backdrop.seen["backdrop"]
    assert isinstance(seen, torch.Tensor)
    torch.testing.assert_close(seen, vm.preprocess(behind))
    assert backdrop.seen["plain"] is behind  # a parameter of another kind is left as given


def test_an_image_parameter_keeps_numbers_and_keywords(backdrop: type[Backdrop]) -> None:
    vm = vision_model()
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    seethrough.explain(vm, image, backdrop.name, backdrop=0.5)
    assert backdrop.seen["backdrop"] == 0.5
    seethrough.explain(vm, image, backdrop.name, backdrop="mean")
    assert backdrop.seen["backdrop"] == "mean"


def test_an_unreadable_image_parameter_is_named(backdrop: type[Backdrop]) -> None:
    with pytest.raises(InvalidParameterError, match="backdrop="):
        seethrough.explain(
            vision_model(), np.zeros((16, 16, 3), np.uint8), backdrop.name, backdrop="nofile.png"
        )
