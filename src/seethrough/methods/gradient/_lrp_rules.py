"""The machinery of layer-wise relevance propagation: rules, and the forward that applies them.

Relevance flows backwards as the *gradient* of one autograd pass (the modified-gradient form
of LRP, as Zennit computes it): each layer with a rule is one node of the graph whose backward
maps the relevance of its output to the relevance of its input. Layers are found by their
operations, not their modules: a :class:`RelevanceMode` (a ``TorchFunctionMode``, active for
one forward) sees every torch operation the model runs and

- gives convolutions and linear layers their rule (see :class:`Rule`), a batch norm that
  follows one merged into it for the call (the model itself is never changed);
- splits the relevance of a sum of activations (ResNet's residual additions) in proportion to
  the summands, and of average pooling and means in proportion to their inputs;
- passes relevance through activations (ReLU, ReLU6, clamps), dropout and reshaping
  unchanged, through max pooling to the winner, and through scaling by a constant unchanged;
- refuses any other operation on the relevance path with ``MethodNotApplicableError`` (a
  product of two activations, softmax, layer norm, GELU...), never a silent wrong answer.

The relevance of each rule is computed from the layer's input ``x``, its output ``z`` and the
transposed layer ``W^T`` (the backward of the convolution with respect to its input), so the
plain ``epsilon`` rule costs what the gradient costs plus a few element-wise products.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ...errors import MethodNotApplicableError

__all__ = [
    "Rule",
    "Epsilon",
    "ZPlus",
    "AlphaBeta",
    "ZBox",
    "Flat",
    "Gamma",
    "Composite",
    "RelevanceMode",
    "stabilize",
]

STABILIZER = 1e-6
"""The stabiliser of every rule but epsilon's own epsilon (as Zennit's default)."""


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)`` with ``sign(0) = +1``: a denominator that is never 0."""
    return torch.where(z >= 0, z + eps, z - eps)


@functools.lru_cache(maxsize=64)
def _eps_tensor(eps: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``eps`` as a 0-d tensor (made once: making one costs more than a small division)."""
    return torch.tensor(eps, dtype=dtype, device=device)


def _ratio(r: torch.Tensor, z: torch.Tensor, eps: float, factor: float = 1.0) -> torch.Tensor:
    """``r / stabilize(z, eps) * factor``, equal to the bit, in a few cheap passes and one new
    tensor: ``eps`` takes the sign of ``z + 0.0`` (where ``-0.0`` becomes ``+0.0``: the sign
    of 0 is +) and is added to ``z``. (On the CPU a ``where`` or a comparison costs several
    times an addition; the rules' cost is mostly such passes.)"""
    den = z.add(0.0)
    den = torch.copysign(_eps_tensor(eps, z.dtype, z.device), den, out=den).add_(z)
    out = torch.div(r, den, out=den) if den.shape == r.shape else r / den
    return out if factor == 1.0 else out.mul_(factor)


# ---------------------------------------------------------------------------------------------
# linear layers as seen by the rules


@dataclass
class Layer:
    """A convolution or linear layer met during the forward: its input ``x``, weight and bias,
    its output ``z`` and how to apply and transpose it.

    A batch norm that follows is merged in: ``bias`` is the merged bias and ``scale`` (one
    value per output channel, ``None`` without batch norm) multiplies the outputs, so that the
    merged weight is ``W' = diag(scale) W``. :meth:`apply` and :meth:`transpose` apply
    ``W'``: where the weight is larger than twice the output (deep layers of a small image)
    ``scale`` is applied to the activations and the weight is never copied; else, or where
    ``scale`` has a negative value (the positive part of ``W'`` is then not ``scale`` times
    the positive part of ``W``), ``W'`` is formed once, on first use. The positive and
    negative parts of the weight (:meth:`part`) are formed once per layer as well.
    """

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    z: torch.Tensor
    kind: str  # "linear" or "conv"
    conv: tuple[Any, Any, Any, int] | None = None  # stride, padding, dilation, groups
    first: bool = False
    scale: torch.Tensor | None = None
    nonnegative: bool | None = None  # x >= 0 everywhere; None: not known yet
    _parts: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _settled: bool = field(default=False, repr=False)

    def settle(self) -> None:
        """Choose, once, between merging ``scale`` into the weight and scaling activations."""
        if self._settled:
            return
        self._settled = True
        s = self.scale
        if s is not None and (self.weight.numel() <= 2 * self.z.numel() or bool((s < 0).any())):
            shape = (-1,) + (1,) * (self.weight.dim() - 1)
            self.weight = self.weight * s.view(shape)
            self.scale = None

    def x_nonnegative(self) -> bool:
        """Whether the input has no negative value (known from the forward, else checked)."""
        if self.nonnegative is None:
            self.nonnegative = not bool(self.x.amin() < 0)
        return self.nonnegative

    def part(self, sign: str) -> torch.Tensor:
        """The positive (``"+"``) or negative (``"-"``) part of the weight, as
        :meth:`apply` takes it (formed once per layer)."""
        self.settle()
        found = self._parts.get(sign)
        if found is None:
            w = self.weight
            found = w.clamp(min=0) if sign == "+" else w.clamp(max=0)
            self._parts[sign] = found
        return found

    def _scale_view(self) -> torch.Tensor:
        return self.scale.view((-1,) + (1,) * (self.z.dim() - 2))  # type: ignore[union-attr]

    def apply(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        merged: bool = True,
    ) -> torch.Tensor:
        """The layer with another input and weight: ``weight . x + bias`` (``weight`` as
        :attr:`weight` or :meth:`part` give it; ``merged=False``: without the batch norm's
        scale, for a weight of the rule's own such as flat's ones)."""
        if merged:
            self.settle()
        scaled = merged and self.scale is not None
        inner = None if scaled else bias
        if self.kind == "linear":
            out = F.linear(x, weight, inner)
        else:
            stride, padding, dilation, groups = self.conv  # type: ignore[misc]
            conv = (F.conv1d, F.conv2d, F.conv3d)[self.x.dim() - 3]
            out = conv(x, weight, inner, stride, padding, dilation, groups)
        if scaled:
            out = out.mul_(self._scale_view())
            if bias is not None:
                out = out.add_(bias.view((-1,) + (1,) * (out.dim() - 2)))
        return out

    def transpose(
        self, s: torch.Tensor, weight: torch.Tensor, *, merged: bool = True
    ) -> torch.Tensor:
        """``weight^T s``: the backward of :meth:`apply` with respect to its input, at ``s``
        (see :meth:`transposes`)."""
        return self.transposes(s, weight, merged=merged)[0]

    def transposes(
        self, s: torch.Tensor, *weights: torch.Tensor, merged: bool = True
    ) -> list[torch.Tensor]:
        """``w^T s`` for each of ``weights``; the batch norm's scale is applied to ``s`` once,
        in place (the rules pass a ``s`` of their own that they do not use again)."""
        if merged:
            self.settle()
            if self.scale is not None:
                s = s.mul_(self._scale_view())
        return [self._transpose(s, w) for w in weights]

    def _transpose(self, s: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return s @ weight
        stride, padding, dilation, groups = self.conv  # type: ignore[misc]
        if isinstance(padding, str):  # 'same' / 'valid': let autograd transpose it
            x = self.x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = self.apply(x, weight, merged=False)
                (grad,) = torch.autograd.grad(out, x, s)
            return grad
        d = self.x.dim() - 2
        return torch.ops.aten.convolution_backward(
            s,
            self.x,
            weight,
            None,
            _tuple(stride, d),
            _tuple(padding, d),
            _tuple(dilation, d),
            False,
            [0] * d,
            groups,
            [True, False, False],
        )[0]


def _tuple(v: int | Sequence[int], d: int) -> list[int]:
    return [int(v)] * d if isinstance(v, int) else [int(i) for i in v]


# ---------------------------------------------------------------------------------------------
# rules


class Rule:
    """How a linear layer ``z = W x + b`` passes the relevance ``R`` of its output to its input.

    Every rule is of the form ``R_in = sum_k x'_k * W'^T (R / z')_k`` for some modified inputs
    ``x'``, weights ``W'`` and denominators ``z'`` (Montavon et al., "Layer-wise relevance
    propagation: an overview", 2019, section 10.2).
    """

    name = ""

    def relevance(self, layer: Layer, r: torch.Tensor) -> torch.Tensor:
        """The relevance of ``layer``'s input, given the relevance ``r`` of its output."""
        raise NotImplementedError


class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): ``R_j = x_j sum_k w_jk R_k / (z_k + eps sign(z_k))``.

    ``eps -> 0`` is LRP-0. The bias takes its share of the relevance, so the rule conserves
    relevance exactly only with zero bias and ``eps -> 0``.
    """

    name = "epsilon"

    def __init__(self, epsilon: float) -> None:
        self.epsilon = epsilon

    def relevance(self, layer: Layer, r: torch.Tensor) -> torch.Tensor:
        """``x * W^T (R / stabilize(z, eps))``."""
        s = _ratio(r, layer.z, self.epsilon)
        return layer.transpose(s, layer.weight).mul_(layer.x)


def _positive(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def _split(t: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if t is None:
        return None, None
    return t.clamp(min=0), t.clamp(max=0)


class ZPlus(Rule):
    """LRP-z+ (Montavon et al. 2017; alpha=1, beta=0), for inputs of either sign as Zennit::

        z+_k = sum_j x+_j w+_jk + x-_j w-_jk + b+_k
        R_j  = x+_j sum_k w+_jk R_k / z+_k  +  x-_j sum_k w-_jk R_k / z+_k

    with ``x+ = max(x, 0)``, ``x- = min(x, 0)`` and the same for weights and bias. Conserves
    relevance where no bias is positive. After a ReLU (``x >= 0``) only the first terms remain:
    one extra convolution forward and one transposed.
    """

    name = "z_plus"

    def relevance(self, layer: Layer, r: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        wp = layer.part("+")
        bp = _positive(layer.bias)
        if layer.x_nonnegative():
            s = _ratio(r, layer.apply(layer.x, wp, bp), STABILIZER)
            return layer.transpose(s, wp).mul_(layer.x)
        wn = layer.part("-")
        xp, xn = _split(layer.x)
        s = _ratio(r, layer.apply(xp, wp, bp).add_(layer.apply(xn, wn)), STABILIZER)
        gp, gn = layer.transposes(s, wp, wn)
        return gp.mul_(xp).add_(gn.mul_(xn))


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015), ``alpha - beta = 1``, for inputs of either sign::

        p_k = sum_j x+_j w+_jk + x-_j w-_jk + b+_k      (the positive contributions)
        n_k = sum_j x+_j w-_jk + x-_j w+_jk + b-_k      (the negative ones)
        R_j = alpha (x+_j sum_k w+_jk R_k/p_k + x-_j sum_k w-_jk R_k/p_k)
            - beta  (x+_j sum_k w-_jk R_k/n_k + x-_j sum_k w+_jk R_k/n_k)

    Conserves relevance with zero bias. ``n = z - p`` (no convolution): the forward's output
    is the sum of both.
    """

    name = "alpha_beta"

    def __init__(self, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta

    def relevance(self, layer: Layer, r: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        wp, wn = layer.part("+"), layer.part("-")
        bp = _positive(layer.bias)
        x = layer.x
        nonnegative = layer.x_nonnegative()
        if nonnegative:
            p = layer.apply(x, wp, bp)
        else:
            xp, xn = _split(x)
            p = layer.apply(xp, wp, bp).add_(layer.apply(xn, wn))
        sn = _ratio(r, layer.z - p, STABILIZER, self.beta)
        sp = _ratio(r, p, STABILIZER, self.alpha)
        if nonnegative:
            (gp,) = layer.transposes(sp, wp)
            (gn,) = layer.transposes(sn, wn)
            return gp.sub_(gn).mul_(x)
        pp, pn = layer.transposes(sp, wp, wn)
        np_, nn_ = layer.transposes(sn, wn, wp)
        positive = pp.mul_(xp).add_(pn.mul_(xn))
        negative = np_.mul_(xp).add_(nn_.mul_(xn))
        return positive.sub_(negative)


class Gamma(Rule):
    """LRP-gamma (Montavon et al. 2019), generalised to inputs of either sign as Zennit.

    With ``W^a = W + gamma W+`` and ``W^b = W + gamma W-`` (bias likewise), where the output
    ``z_k`` is positive the relevance is split by ``z^a_k = W^a x+ + W^b x- + b^a``, where it
    is negative by ``z^b_k = W^b x+ + W^a x- + b^b``::

        R_j = x+_j W^a^T (R [z>0] / z^a) + x-_j W^b^T (R [z>0] / z^a)
            + x+_j W^b^T (R [z<0] / z^b) + x-_j W^a^T (R [z<0] / z^b)

    ``gamma = 0`` is LRP-0; large ``gamma`` tends to z+.
    """

    name = "gamma"

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def relevance(self, layer: Layer, r: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        wp, wn = layer.part("+"), layer.part("-")
        bp, bn = _split(layer.bias)
        wa, wb = layer.weight + self.gamma * wp, layer.weight + self.gamma * wn
        b = layer.bias
        ba = None if b is None else b + self.gamma * bp
        bb = None if b is None else b + self.gamma * bn
        pos, neg = r * (layer.z > 0), r * (layer.z < 0)
        x = layer.x
        if layer.x_nonnegative():
            sa = _ratio(pos, layer.apply(x, wa, ba), STABILIZER)
            sb = _ratio(neg, layer.apply(x, wb, bb), STABILIZER)
            (ga,) = layer.transposes(sa, wa)
            (gb,) = layer.transposes(sb, wb)
            return ga.add_(gb).mul_(x)
        xp, xn = _split(x)
        sa = _ratio(pos, layer.apply(xp, wa, ba).add_(layer.apply(xn, wb)), STABILIZER)
        sb = _ratio(neg, layer.apply(xp, wb, bb).add_(layer.apply(xn, wa)), STABILIZER)
        aa, ab = layer.transposes(sa, wa, wb)
        ba_, bb_ = layer.transposes(sb, wb, wa)
        return aa.add_(ba_).mul_(xp).add_(ab.add_(bb_).mul_(xn))


class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for an input bounded by ``low <= x <= high``::

        z_k = sum_j x_j w_jk - low_j w+_jk - high_j w-_jk
        R_j = x_j sum_k w_jk R_k/z_k - low_j sum_k w+_jk R_k/z_k - high_j sum_k w-_jk R_k/z_k

    Conservative (the bias plays no part). Meant for the first layer, on pixels.
    """

    name = "z_box"

    def __init__(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.low, self.high = low, high

    def relevance(self, layer: Layer, r: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        x = layer.x
        low, high = (_bound(v, x) for v in (self.low, self.high))
        w, wp, wn = layer.weight, layer.part("+"), layer.part("-")
        z = layer.apply(x, w).sub_(layer.apply(low, wp)).sub_(layer.apply(high, wn))
        s = _ratio(r, z, STABILIZER)
        g, gp, gn = layer.transposes(s, w, wp, wn)
        return g.mul_(x).sub_(gp.mul_(low)).sub_(gn.mul_(high))


def _bound(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A bound ``(N or 1, C, 1, 1)`` spread over the input ``x`` of the first layer."""
    v = v.to(x)
    if x.dim() == v.dim():
        return v.expand(v.shape[0], *x.shape[1:])
    if x.dim() == 2:  # a linear first layer on the flattened image
        raise MethodNotApplicableError(
            "the z^B (box) rule needs the first layer to see the image: this model's first "
            "layer is a linear layer on the flattened input; choose a composite without a box"
        )
    raise MethodNotApplicableError(f"the box bounds do not fit a first-layer input of {x.shape}")


class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019): every output spreads its relevance evenly over its
    receptive field, whatever the input and weights::

        R_j = sum_k 1 * R_k / (sum_j' 1)        (sums over the receptive field of k)
    """

    name = "flat"

    def relevance(self, layer: Layer, r: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        ones = torch.ones_like(layer.weight)
        one_x = torch.ones((1, *layer.x.shape[1:]), dtype=layer.x.dtype, device=layer.x.device)
        s = _ratio(r, layer.apply(one_x, ones, merged=False), STABILIZER)
        return layer.transpose(s, ones, merged=False)


@dataclass(frozen=True)
class Composite:
    """Which rule each layer gets: the first convolution or linear layer of the forward
    (``first``, ``None``: its kind's rule), the other convolutions and the linear layers."""

    conv: Rule
    linear: Rule
    first: Rule | None = None

    def rule(self, kind: str, first: bool) -> Rule:
        """The rule of a layer of ``kind`` ('conv' or 'linear')."""
        if first and self.first is not None:
            return self.first
        return self.conv if kind == "conv" else self.linear


# ---------------------------------------------------------------------------------------------
# the autograd node


class _Node:
    """One node of the relevance graph: its output and the backward from the relevance of
    that output to the relevance of each input on the relevance path."""

    output: torch.Tensor

    def backward(self, r: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        raise NotImplementedError


class _Relevance(torch.autograd.Function):
    """``node.output`` in the forward; ``node.backward`` in the backward."""

    @staticmethod
    def forward(ctx, node: _Node, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.node = node
        return node.output

    @staticmethod
    def backward(ctx, r: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001
        node = ctx.node
        ctx.node = None  # one backward: free what the node holds
        return (None, *node.backward(r))


class _RuleNode(_Node):
    def __init__(self, layer: Layer, rule: Rule) -> None:
        self.layer, self.rule, self.output = layer, rule, layer.z

    def backward(self, r: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        self.layer.settle()
        return (self.rule.relevance(self.layer, r),)


class _PassNode(_Node):
    """Relevance passes unchanged (activations, dropout, merged batch norm, scaling)."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output = output

    def backward(self, r: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (r,)


class _ShareNode(_Node):
    """``z = sum_i c_i`` (a sum of tensors, or a linear map such as average pooling): each
    input gets ``R_i = c_i * R / z``, the relevance split in proportion to its contribution.
    ``shares[i]`` maps ``s = R / z`` to ``R_i``."""

    def __init__(
        self, output: torch.Tensor, shares: Sequence[Callable[[torch.Tensor], torch.Tensor]]
    ) -> None:
        self.output, self.shares = output, shares

    def backward(self, r: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        s = _ratio(r, self.output, STABILIZER)
        return tuple(share(s) for share in self.shares)


# ---------------------------------------------------------------------------------------------
# the forward that applies the rules

_CONV = {"conv1d", "conv2d", "conv3d"}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum")
_ACTIVATIONS = {
    "relu",
    "relu_",
    "relu6",
    "threshold",
    "threshold_",
    "hardtanh",
    "hardtanh_",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_min_",
    "dropout",
    "dropout_",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
}
_RESHAPES = {
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "unflatten",
    "permute",
    "transpose",
    "t",
    "contiguous",
    "clone",
    "__getitem__",
    "squeeze",
    "unsqueeze",
    "narrow",
    "select",
    "movedim",
    "moveaxis",
}
_MAX_POOLS = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
}
_STRUCTURAL = (
    _RESHAPES
    | _MAX_POOLS
    | {
        "cat",
        "concat",
        "concatenate",
        "stack",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "to",
        "type",
        "float",
        "double",
        "half",
        "bfloat16",
        "max_pool1d_with_indices",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "pad",
        "identity",
        "detach",
    }
)
_KEEPS_SIGN = _RESHAPES | _MAX_POOLS | {"dropout", "dropout1d", "dropout2d", "dropout3d"}
"""Operations whose output has no negative value where their input has none."""
_LOWER_BOUND = {  # name: (keyword, position, default) of the lowest value of the output
    "hardtanh": ("min_val", 1, -1.0),
    "hardtanh_": ("min_val", 1, -1.0),
    "clamp": ("min", 1, None),
    "clamp_": ("min", 1, None),
    "clamp_min": ("min", 1, None),
    "clamp_min_": ("min", 1, None),
}


def _bounded_below_by_zero(name: str, args: Sequence[object], kwargs: dict[str, object]) -> bool:
    """Whether the activation ``name`` with these arguments never outputs a negative value."""
    if name in {"relu", "relu_", "relu6"}:
        return True
    spec = _LOWER_BOUND.get(name)
    if spec is None:
        return False
    key, position, default = spec
    low = kwargs.get(key, args[position] if len(args) > position else default)
    high = kwargs.get("max", args[2] if len(args) > 2 else None) if key == "min" else None
    return _number_at_least_zero(low) and (high is None or _number_at_least_zero(high))


def _number_at_least_zero(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


_POOLS = {
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "mean",
    "sum",
}
_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_SUB = {"sub", "__sub__", "__isub__", "sub_", "subtract"}
_RSUB = {"__rsub__", "rsub"}
_SCALE = {"mul", "__mul__", "__rmul__", "div", "__truediv__", "true_divide", "neg", "__neg__"}


def _on_path(v: object) -> bool:
    return isinstance(v, torch.Tensor) and v.requires_grad


def _any_on_path(args: Sequence[object], kwargs: dict[str, object]) -> bool:
    for v in (*args, *kwargs.values()):
        if _on_path(v):
            return True
        if isinstance(v, (list, tuple)) and any(_on_path(i) for i in v):
            return True
    return False


def _bind(names: Sequence[str], args: Sequence[object], kwargs: dict[str, object]) -> dict:
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


class RelevanceMode(TorchFunctionMode):
    """While active, the operations of a forward build the relevance graph of ``composite``.

    Use around exactly one forward whose input requires grad; then differentiate the target
    score with ``grad_outputs`` = the initial relevance. ``layers`` counts the layers that got
    a rule (0 means the forward was not seen: refuse the result).
    """

    def __init__(self, composite: Composite) -> None:
        super().__init__()
        self.composite = composite
        self.layers = 0
        self._produced: dict[int, tuple[torch.Tensor, Layer]] = {}
        self._nonnegative: dict[int, torch.Tensor] = {}  # outputs known to be >= 0

    def __exit__(self, *exc: object) -> None:
        self._produced.clear()
        self._nonnegative.clear()
        super().__exit__(*exc)

    def _known_nonnegative(self, x: object) -> bool:
        return self._nonnegative.get(id(x)) is x

    def _mark_nonnegative(self, out: torch.Tensor) -> torch.Tensor:
        self._nonnegative[id(out)] = out
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if not _any_on_path(args, kwargs):
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if name in _CONV or name == "linear":
            return self._layer(func, name, args, kwargs)
        if name == "batch_norm":
            return self._batch_norm(func, args, kwargs)
        if name in _ACTIVATIONS:
            return self._activation(func, name, args, kwargs)
        if name in _STRUCTURAL:
            out = func(*args, **kwargs)
            if name in _KEEPS_SIGN and isinstance(out, torch.Tensor) and args:
                if self._known_nonnegative(args[0]):
                    self._mark_nonnegative(out)
            return out
        if name in _POOLS:
            return self._pool(func, args, kwargs)
        if name in _ADD | _SUB | _RSUB:
            return self._sum(func, name, args, kwargs)
        if name in _SCALE:
            on_path = [a for a in args if _on_path(a)]
            if len(on_path) == 1 and (name not in {"div", "__truediv__"} or args[0] is on_path[0]):
                with torch.no_grad():
                    out = func(*[a.detach() if _on_path(a) else a for a in args], **kwargs)
                if out.shape == on_path[0].shape:
                    return _Relevance.apply(_PassNode(out), on_path[0])
        if name == "__setitem__":
            raise MethodNotApplicableError(
                "LRP cannot follow an assignment into a tensor on the way to the output"
            )
        out = func(*args, **kwargs)
        if _any_on_path(out if isinstance(out, (list, tuple)) else (out,), {}):
            raise MethodNotApplicableError(
                f"LRP has no rule for the operation '{name}' on activations: LRP supports "
                "convolutions, linear layers, batch norm after them, ReLU-like activations, "
                "pooling, residual sums and reshaping (not, e.g., attention, softmax, layer "
                "norm, GELU or products of activations)"
            )
        return out

    def _activation(self, func, name: str, args, kwargs) -> torch.Tensor:  # noqa: ANN001
        """The activation's output; relevance passes unchanged (Zennit's ``Pass``). Computed
        out of place: an in-place ReLU would overwrite the output another node keeps."""
        x, rest = args[0], args[1:]
        if "inplace" in kwargs:
            kwargs = {**kwargs, "inplace": False}
        with torch.no_grad():
            inplace = name.endswith("_") or any(a is True for a in rest)
            out = func(x.detach().clone() if inplace else x.detach(), *rest, **kwargs)
        out = _Relevance.apply(_PassNode(out), x)
        if _bounded_below_by_zero(name, args, kwargs) or (
            name in _KEEPS_SIGN and self._known_nonnegative(x)
        ):
            self._mark_nonnegative(out)
        return out

    # -- layers with a rule ------------------------------------------------------------------

    def _layer(self, func, name: str, args, kwargs) -> torch.Tensor:  # noqa: ANN001
        if name == "linear":
            a = _bind(("input", "weight", "bias"), args, kwargs)
            conv = None
        else:
            a = {**_CONV_DEFAULTS, **_bind(_CONV_ARGS, args, kwargs)}
            conv = (a["stride"], a["padding"], a["dilation"], int(a["groups"]))
        x, weight, bias = a["input"], a["weight"], a.get("bias")
        if _on_path(weight) or _on_path(bias):
            raise MethodNotApplicableError(
                f"LRP needs the weights of '{name}' to be constants, not computed from the input"
            )
        with torch.no_grad():
            z = func(*[v.detach() if _on_path(v) else v for v in args], **kwargs)
        layer = Layer(
            x.detach(), weight.detach(), None if bias is None else bias.detach(), z,
            "linear" if conv is None else "conv", conv, first=self.layers == 0,
            nonnegative=True if self._known_nonnegative(x) else None,
        )  # fmt: skip
        self.layers += 1
        rule = self.composite.rule(layer.kind, layer.first)
        out = _Relevance.apply(_RuleNode(layer, rule), x)
        self._produced[id(out)] = (out, layer)
        return out

    def _batch_norm(self, func, args, kwargs) -> torch.Tensor:  # noqa: ANN001
        a = _bind(_BN_ARGS, args, kwargs)
        x = a["input"]
        produced = self._produced.get(id(x))
        if produced is None or produced[0] is not x:
            raise MethodNotApplicableError(
                "LRP merges a batch norm into the convolution or linear layer it follows; this "
                "model has a batch norm after another operation, which it cannot explain"
            )
        if a.get("training") or a["running_mean"] is None:
            raise MethodNotApplicableError(
                "LRP needs batch norms with running statistics (eval mode) to merge them"
            )
        layer = produced[1]
        eps = float(kwargs.get("eps", args[7] if len(args) > 7 else 1e-5))
        mean, var = a["running_mean"].detach(), a["running_var"].detach()
        weight, bias = a.get("weight"), a.get("bias")
        scale = (var + eps).rsqrt()
        if weight is not None:
            scale = scale * weight.detach()
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias.detach()
        with torch.no_grad():
            out = func(x.detach(), *[v.detach() if _on_path(v) else v for v in args[1:]], **kwargs)
        scale = scale.to(layer.weight)  # merged when the rule first needs the weight
        b = shift if layer.bias is None else layer.bias * scale + shift
        layer.scale = scale if layer.scale is None else layer.scale * scale
        layer.bias = b.to(layer.weight)
        layer.z = out
        merged = _Relevance.apply(_PassNode(out), x)
        self._produced[id(merged)] = (merged, layer)  # a second batch norm merges as well
        return merged

    # -- proportional splits -----------------------------------------------------------------

    def _pool(self, func, args, kwargs) -> torch.Tensor:  # noqa: ANN001
        x = args[0]
        if not _on_path(x) or _any_on_path(args[1:], kwargs):
            raise MethodNotApplicableError("LRP: a pooling of several activations")
        x0 = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = func(x0, *args[1:], **kwargs)

        def share(s: torch.Tensor) -> torch.Tensor:
            (grad,) = torch.autograd.grad(out, x0, s)
            return x0.detach() * grad

        return _Relevance.apply(_ShareNode(out.detach(), [share]), x)

    def _sum(self, func, name: str, args, kwargs) -> torch.Tensor:  # noqa: ANN001
        """``a + alpha b`` (or ``a - alpha b``, ``b - alpha a``) with ``a`` or ``b`` on the
        relevance path: the relevance is split in proportion to the two terms; a constant term
        (a bias) keeps its share."""
        a, b = args[0], (args[1] if len(args) > 1 else kwargs.get("other"))
        alpha = kwargs.get("alpha", 1)
        signs = (1, -alpha) if name in _SUB else (-alpha, 1) if name in _RSUB else (1, alpha)
        terms = [(v, _constant(v) * sign) for v, sign in zip((a, b), signs, strict=True)]
        out = terms[0][1] + terms[1][1]
        shares, inputs = [], []
        for v, value in terms:
            if _on_path(v):
                shares.append(_share_of(value, v.shape))
                inputs.append(v)
        return _Relevance.apply(_ShareNode(out, shares), *inputs)


def _constant(v: object) -> Any:
    return v.detach() if isinstance(v, torch.Tensor) else v


def _share_of(value: torch.Tensor, shape: torch.Size) -> Callable[[torch.Tensor], torch.Tensor]:
    """``s -> value * s``, summed back to ``shape`` where the term was broadcast."""
    return lambda s: (value * s).sum_to_size(shape)
