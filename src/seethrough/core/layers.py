"""Find the layer an explanation looks at: by dotted name, by module, or automatically."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import torch
from torch import nn

from ..errors import UnknownLayerError, suggest
from .tokens import transformer_default_layer

__all__ = [
    "LayerRef",
    "named_modules",
    "resolve_layer",
    "default_layer",
    "spatial_layers",
    "finishing_order",
    "last_spatial_layer",
    "unknown_layer",
]

LayerRef = str | nn.Module | None
Shapes = list[tuple[str, tuple[int, ...]]]

# Modules that only resample or pass on a representation (VGG's AdaptiveAvgPool2d(7) is one):
# never a default layer.
_NOT_A_REPRESENTATION = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Upsample,
)

# module -> name of its default layer; weak so models can be garbage collected.
_DEFAULT_CACHE: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def named_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``dict(model.named_modules())``: the same names, modules and order, built faster.

    One recursive pass over the ``_modules`` dictionaries instead of torch's nested generators,
    whose every item climbs back through each level of nesting; this runs once per explanation.
    """
    found: dict[str, nn.Module] = {"": model}
    seen = {id(model)}

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module._modules.items():
            if child is None or id(child) in seen:
                continue
            seen.add(id(child))
            full = f"{prefix}.{name}" if prefix else name
            found[full] = child
            visit(full, child)

    visit("", model)
    return found


def resolve_layer(
    model: nn.Module,
    layer: LayerRef,
    example: torch.Tensor | None = None,
    default: str | None = None,
    named: dict[str, nn.Module] | None = None,
) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for ``layer``.

    Args:
        model: the network.
        layer: a dotted name (``"layer4"``, ``"features.denseblock4"``, ``"blocks.6"``), a submodule
            of ``model``, or ``None`` for the default.
        example: an input batch used once to find the default layer (see :func:`default_layer`).
        default: the model's preferred default layer name (a ``VisionModel`` knows it), used when
            ``layer`` is ``None``.
        named: ``dict(model.named_modules())`` if the caller has it already.
    """
    named = named if named is not None else named_modules(model)
    if layer is None:
        layer = default or default_layer(model, example)
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise UnknownLayerError("the given layer module is not a submodule of this model")
    if not isinstance(layer, str):
        raise UnknownLayerError(f"layer must be a name or a module, not {type(layer).__name__}")
    if layer in named and layer != "":
        return layer, named[layer]
    candidates = [n for n in named if n]
    raise unknown_layer(layer, candidates, shown=[n for n in candidates if n.count(".") <= 1])


def unknown_layer(
    layer: str,
    names: Sequence[str],
    *,
    shown: Sequence[str] | None = None,
    model: str = "this model",
) -> UnknownLayerError:
    """The error for a layer name that ``model`` lacks: the close ones among ``names``
    (:func:`~seethrough.errors.suggest`), else the last eight of ``shown`` (default ``names``).

    Args:
        layer: the name asked for.
        names: every layer name of the model.
        shown: the names to list when none is close.
        model: how the message names the model.
    """
    hint = suggest(layer, names)
    if not hint:
        tail = list(names if shown is None else shown)[-8:]
        hint = f" Some layers of this model: {', '.join(tail)}."
    return UnknownLayerError(f"no layer named '{layer}' in {model}.{hint}")


def spatial_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Every submodule whose output is a spatial map ``(N, C, H, W)`` with ``H * W > 1``.

    Pooling, dropout, identity and upsampling modules are left out: they pass a representation on
    rather than compute one.

    Listed in the order the modules *finish* during one forward of ``example`` (a container
    finishes after its children), each with its output shape.
    """

    def spatial(name: str, module: nn.Module, output: object) -> Shapes:
        if isinstance(module, _NOT_A_REPRESENTATION):
            return []
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            if output.shape[2] * output.shape[3] > 1:
                return [(name, tuple(output.shape))]
        return []

    def run() -> None:
        with torch.no_grad():
            model(example[:1])

    return finishing_order(((n, m) for n, m in model.named_modules() if n), run, spatial)


def finishing_order(
    modules: Iterable[tuple[str, nn.Module]],
    run: Callable[[], object],
    entries: Callable[[str, nn.Module, object], Shapes],
) -> Shapes:
    """The ``(name, shape)`` entries of the outputs of ``modules`` in the order the modules
    finish during ``run`` (one forward).

    A forward hook on each module hands ``entries(name, module, output)`` the module's output
    and keeps what it returns (nothing, or one entry per map of the output); every hook is
    removed afterwards, whatever happens. An entry that comes again (a module called twice)
    keeps its last place and shape.

    Args:
        modules: ``(name, module)`` pairs to hook.
        run: runs the forward.
        entries: the entries of one output.
    """
    order: Shapes = []
    handles = []

    def make(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            order.extend(entries(name, module, output))

        return hook

    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(make(name)))
        run()
    finally:
        for h in handles:
            h.remove()
    seen: dict[str, tuple[int, ...]] = {}
    for name, shape in order:
        seen.pop(name, None)
        seen[name] = shape
    return list(seen.items())


def default_layer(model: nn.Module, example: torch.Tensor | None) -> str:
    """The last layer to finish with a spatial ``(N, C, H, W)`` output.

    For a ResNet this is ``layer4``, for a VGG ``features``, for timm's EfficientNet ``bn2``: the
    last convolutional representation before global pooling, where CAM methods are defined. For
    a timm vision transformer it is ``blocks.<last>.norm1`` (see
    :func:`~seethrough.core.tokens.transformer_default_layer`). The answer is cached per model.
    """
    if model in _DEFAULT_CACHE:
        return _DEFAULT_CACHE[model]
    transformer = transformer_default_layer(model)
    if transformer is not None:
        _DEFAULT_CACHE[model] = transformer
        return transformer
    name = last_spatial_layer(partial(spatial_layers, model), example)
    _DEFAULT_CACHE[model] = name
    return name


def last_spatial_layer(
    spatial: Callable[[torch.Tensor], Shapes],
    example: torch.Tensor | None,
    *,
    model: str = "this model",
    layout: str = "(N, C, H, W)",
) -> str:
    """The default layer: the last of ``spatial(example)``, a model's layers with a spatial
    output in the order they finish (:func:`spatial_layers` for a torch model).

    Args:
        spatial: lists those layers for an example input.
        example: the input; without one no default can be found.
        model: how the messages name the model.
        layout: the layout of its spatial outputs, in the messages.

    Raises:
        UnknownLayerError: no example, or no layer with a spatial output.
    """
    if example is None:
        raise UnknownLayerError("no layer given and no example input to find a default layer")
    layers = spatial(example)
    if not layers:
        raise UnknownLayerError(
            f"{model} has no layer with a spatial {layout} output; give layer= explicitly"
        )
    return layers[-1][0]
