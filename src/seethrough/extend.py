"""The public extension API: everything needed to add an explanation method, from one module.

A new method is a subclass of a family's base class that says only what differs from its
family, registered with ``register_method`` (``unregister_method`` takes it out again). Once
registered it is a method like the built-in ones: ``explain(model, image, name)``,
``seethrough methods``, the dashboard's forms and the common checks of the test suite all find
it in the registry.

What each family's base class asks of a variant:

- ``CAMMethod``: ``CAMMethod.weights`` (channel weights ``(N, C)`` from a
  ``CAMState``), or ``CAMMethod.combine`` for an element-wise map.
- ``GradientMethod``: ``GradientMethod.attribute``, an ``Attribution``
  ``(N, C, H, W)``, and a ``reduce`` parameter (``reduce_param``) that makes it a map;
  ``input_gradients`` gives ``d score / d input`` in one pass.
- ``SurrogateMethod`` (superpixel coalitions and a linear fit, as LIME and Kernel SHAP):
  ``SurrogateMethod.coalitions`` and ``SurrogateMethod.fit``, returning a ``Fit``.
- ``PerturbationMethod`` (any masks): ``PerturbationMethod.evaluations`` and
  ``PerturbationMethod.explain_one``, which scores a ``MaskSource`` with
  ``PerturbationMethod.scores`` and returns a ``Single``.
- ``Method`` itself, for a new family: ``Method.run`` on a ``Context``, returning
  a ``MethodResult`` (``ctx.result(...)``).

A method runs the model through ``ctx.runner``, a ``ModelRunner`` (``TorchRunner`` for a
PyTorch module); another kind of model plugs in as a ``ModelRunner`` subclass passed to a
method in place of the network (its contract: :mod:`seethrough.core.runner`).

Parameters several methods share (``SEED``, ``N_SAMPLES``, ``BATCH_SIZE``; the full catalogue
is :mod:`seethrough.methods.params`) are declared once; a method that needs its own default or
help lists ``dataclasses.replace(N_SAMPLES, default=200, help="...")``.

The guide with worked examples is ``docs/extending.md``.
"""

from __future__ import annotations

from .core.perturb import MaskSource
from .core.progress import Progress, Ticker
from .core.runner import ModelRunner, TorchRunner
from .core.targets import ResolvedTarget
from .methods.base import Context, Method, MethodResult
from .methods.cam.base import CAMMethod, CAMState
from .methods.gradient.base import Attribution, GradientMethod, input_gradients, reduce_param
from .methods.params import BATCH_SIZE, N_SAMPLES, SEED
from .methods.perturbation.base import PerturbationMethod, Sample, Single
from .methods.perturbation.surrogate import Fit, SurrogateMethod, weighted_ridge
from .registry import (
    MethodInfo,
    Param,
    get_method,
    list_methods,
    register_method,
    unregister_method,
)

__all__ = [
    # registering and describing a method
    "register_method",
    "unregister_method",
    "Param",
    "MethodInfo",
    "get_method",
    "list_methods",
    # parameters several methods share (a variant: dataclasses.replace(SEED, help=...))
    "SEED",
    "N_SAMPLES",
    "BATCH_SIZE",
    # the protocol every method follows
    "Method",
    "Context",
    "MethodResult",
    # how a method runs the model (a new kind of model: a ModelRunner subclass)
    "ModelRunner",
    "TorchRunner",
    "ResolvedTarget",
    "Ticker",
    "Progress",
    # the CAM family
    "CAMMethod",
    "CAMState",
    # the gradient family
    "GradientMethod",
    "Attribution",
    "input_gradients",
    "reduce_param",
    # the perturbation family
    "PerturbationMethod",
    "Sample",
    "Single",
    "MaskSource",
    "SurrogateMethod",
    "Fit",
    "weighted_ridge",
]
