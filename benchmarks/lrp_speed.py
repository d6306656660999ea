"""Speed of seethrough's LRP against Zennit at equal composite, and against the model's floor.

What is measured, for each model (defaults: resnet18 and vgg16 with random weights, and the
bundled efficientnet_lite0 with its real weights), on a random model input of ``--size``
(224 by default) at batch 1, all in ONE interleaved run per model (see ``_timing.py``: warm-up,
then round-robin over the candidates, the starting one rotating; median and min of the
repeats, wall and CPU time):

- ``ours:<composite>``: ``seethrough.explain(model, x, "lrp", composite=..., target=T)``, the
  whole public call (input checks, the method, numpy conversion);
- ``zennit:<composite>``: Zennit's ``Gradient`` attributor with the same composite and its
  canonizers for the architecture (``ResNetCanonizer``, ``VGGCanonizer``), built and entered
  inside the timed call as ``explain`` builds ours, on the same input and target class ``T``
  (the top class, fixed before timing). The composites map one to one: ``epsilon`` (Zennit's
  ``LayerMapComposite`` of ``Epsilon`` for convolutions and linear layers), ``epsilon_plus``
  (``EpsilonPlus``), ``epsilon_alpha2_beta1`` (``EpsilonAlpha2Beta1``), ``epsilon_plus_flat``
  (``EpsilonPlusFlat``), ``epsilon_gamma_box`` (``EpsilonGammaBox``), ``z_plus``
  (``ExcitationBackprop``). Zennit has no canonizer for the bundled timm EfficientNet (its
  batch norms and residual sums would go unmerged: another algorithm), so that model gets no
  Zennit row;
- ``floor``: one plain forward and backward of the target's score to the input, in eval mode
  with frozen parameters (as ``explain`` runs the model);
- ``floor+extra:<composite>``: the floor, then the convolutions the composite's rules run on
  top of the gradient's own (replayed on the very tensors one LRP call used, recorded before
  timing): z+ runs each layer's positive weights forward (``W+ x``, twice where the input has
  both signs) and transposes them instead of ``W``; alpha-beta runs ``W+ x`` and transposes
  ``W+`` and ``W-`` (four transposes where the input has both signs); gamma and the box rule
  more. This is the arithmetic floor of the composite: no implementation of the rule can do
  less convolution work than it (epsilon has none: its floor is the floor);
- ``before:<composite>`` (with ``--before REV``): ``explain`` as ``ours``, with the rules of
  the git revision ``REV`` (``src/seethrough/methods/gradient/_lrp_rules.py`` at that revision),
  to compare a change with what it changed, in the same run.

Columns: ``extra convs`` the convolutions above the floor per layer with a rule
(``+f fwd +b bwd``, averaged over the layers); ``arith`` the ratio of ``floor+extra`` to the
floor; ``vs floor`` the paired median over rounds of ours / floor, target 1.20 (the issue's:
LRP within 1.2x of one forward and backward); ``vs arith`` ours / ``floor+extra``, target 1.20:
what the implementation adds to the arithmetic the rule needs (the same as ``vs floor`` for
epsilon); ``vs zennit`` ours / Zennit, target 1.00 (not slower); ``before vs floor`` the
``vs floor`` of the other revision's rules and ``vs before`` ours / before.
Each verdict gets a ``?`` when min-over-min or the CPU-time ratio disagrees (see
``_timing.verdict``). On a CPU a convolution costs its arithmetic, so z+ and alpha-beta cannot
meet 1.20 of the floor where their ``arith`` column is above it: ``vs arith`` is their target.

Run: ``.venv/bin/python benchmarks/lrp_speed.py`` (``--quick``: 112x112, 3 rounds; a few
minutes on a quiet 2-core machine; ``--threads 1`` on a machine shared with other jobs). The
Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import _timing as bench
import torch
from torch import nn

import seethrough
from seethrough.methods.gradient import _lrp_rules as rules
from seethrough.methods.gradient import lrp as lrp_method

FLOOR_TARGET = 1.20
ZENNIT_TARGET = 1.00
COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_alpha2_beta1")
ALL = (*COMPOSITES, "epsilon_plus_flat", "epsilon_gamma_box", "z_plus")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RULES_PATH = "src/seethrough/methods/gradient/_lrp_rules.py"


def zennit_composite(name: str, arch: str) -> Any:
    """Zennit's composite equal to ours called ``name``, with the canonizer of ``arch``."""
    from zennit import composites as zc
    from zennit import rules as zr
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    from zennit.types import Convolution

    can = [ResNetCanonizer() if arch.startswith("resnet") else VGGCanonizer()]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    low, high = (0 - mean) / std, (1 - mean) / std
    if name == "epsilon":
        eps = [(Convolution, zr.Epsilon(1e-6)), (nn.Linear, zr.Epsilon(1e-6))]
        return zc.LayerMapComposite(zc.layer_map_base() + eps, canonizers=can)
    return {
        "epsilon_plus": lambda: zc.EpsilonPlus(canonizers=can),
        "epsilon_alpha2_beta1": lambda: zc.EpsilonAlpha2Beta1(canonizers=can),
        "epsilon_plus_flat": lambda: zc.EpsilonPlusFlat(canonizers=can),
        "epsilon_gamma_box": lambda: zc.EpsilonGammaBox(low=low, high=high, canonizers=can),
        "z_plus": lambda: zc.ExcitationBackprop(canonizers=can),
    }[name]()


class Extra:
    """The convolutions of one LRP call beyond the gradient's own (one transpose per layer),
    recorded by :func:`recording` to be replayed by :meth:`replay`."""

    def __init__(self) -> None:
        self.layers = 0
        self.calls: list[Callable[[], object]] = []
        self.forwards = 0
        self.backwards = 0
        self._transposes = 0
        self._inside = False

    def replay(self) -> None:
        """Run the recorded convolutions again."""
        for call in self.calls:
            call()

    def label(self) -> str:
        """``+f fwd +b bwd`` per layer."""
        n = max(self.layers, 1)
        return f"+{self.forwards / n:.2f} fwd +{self.backwards / n:.2f} bwd"


@contextmanager
def recording() -> Iterator[Extra]:
    """A block in which the rules' convolutions are recorded (the rules still run)."""
    extra = Extra()
    apply, transpose, backward = rules.Layer.apply, rules.Layer._transpose, rules._RuleNode.backward

    def node_backward(node: Any, r: torch.Tensor) -> Any:
        extra.layers += 1
        extra._transposes = 0
        return backward(node, r)

    def layer_apply(layer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not extra._inside:
            extra.forwards += 1
            extra.calls.append(partial(apply, layer, *args, **kwargs))
        return apply(layer, *args, **kwargs)

    def layer_transpose(layer: Any, s: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        extra._transposes += 1
        if extra._transposes > 1:
            extra.backwards += 1
            extra.calls.append(partial(transpose, layer, s.clone(), weight))
        extra._inside = True
        try:
            return transpose(layer, s, weight)
        finally:
            extra._inside = False

    rules.Layer.apply = layer_apply  # type: ignore[method-assign]
    rules.Layer._transpose = layer_transpose  # type: ignore[method-assign]
    rules._RuleNode.backward = node_backward  # type: ignore[method-assign]
    try:
        yield extra
    finally:
        rules.Layer.apply = apply  # type: ignore[method-assign]
        rules.Layer._transpose = transpose  # type: ignore[method-assign]
        rules._RuleNode.backward = backward  # type: ignore[method-assign]


def rules_at(rev: str) -> ModuleType:
    """The rules module as it was at the git revision ``rev``, imported under another name."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{rev}:{RULES_PATH}"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="lrp-before-"))
    path = folder / "_lrp_rules_before.py"
    path.write_text(source)
    name = "seethrough.methods.gradient._lrp_rules_before"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    path.unlink()
    folder.rmdir()
    return module


@contextmanager
def rules_of(module: ModuleType) -> Iterator[None]:
    """``explain``'s LRP runs the rules of ``module`` (see :func:`rules_at`) in the block."""

    def same_rule(rule: Any) -> Any:
        if rule is None:
            return None
        twin = object.__new__(getattr(module, type(rule).__name__))
        twin.__dict__.update(vars(rule))
        return twin

    def composite(*args: Any) -> Any:
        ours = original(*args)
        return module.Composite(
            conv=same_rule(ours.conv), linear=same_rule(ours.linear), first=same_rule(ours.first)
        )

    original, mode = lrp_method.composite, lrp_method.RelevanceMode
    lrp_method.composite, lrp_method.RelevanceMode = composite, module.RelevanceMode
    try:
        yield
    finally:
        lrp_method.composite, lrp_method.RelevanceMode = original, mode


def candidates(
    arch: str, composites: tuple[str, ...], size: int, before: ModuleType | None
) -> tuple[list[bench.Candidate], dict[str, Extra], bool]:
    """The floor, ours, the arithmetic floors, (with ``before``) the rules of another revision
    and (where Zennit has canonizers for ``arch``) Zennit's, per composite."""
    weights = "default" if arch == "efficientnet_lite0" else "none"
    vm = seethrough.load_model(arch, weights=weights)
    module = vm.module.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = module(x)
    target = int(logits.argmax())
    onehot = torch.eye(logits.shape[1])[[target]]

    def floor() -> None:
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(module(xi)[:, target].sum(), xi)

    found = [bench.Candidate("floor", bench.frozen(module, floor))]
    extras: dict[str, Extra] = {}
    for name in composites:

        def ours(name: str = name) -> None:
            seethrough.explain(vm, x, "lrp", target=target, composite=name)

        found.append(bench.Candidate(f"ours:{name}", ours))
        with recording() as extra:
            ours()
        extras[name] = extra
        if extra.calls:

            def arithmetic(extra: Extra = extra) -> None:
                floor()
                extra.replay()

            found.append(bench.Candidate(f"floor+extra:{name}", bench.frozen(module, arithmetic)))
        if before is not None:

            def old(name: str = name) -> None:
                with rules_of(before):
                    ours(name)

            found.append(bench.Candidate(f"before:{name}", old))
    with_zennit = arch.startswith(("resnet", "vgg"))
    if with_zennit:
        from zennit.attribution import Gradient

        for name in composites:

            def theirs(name: str = name) -> None:
                with Gradient(module, zennit_composite(name, arch)) as attributor:
                    attributor(x, onehot)

            found.append(bench.Candidate(f"zennit:{name}", bench.frozen(module, theirs)))
    return found, extras, with_zennit


def compare(
    t: dict[str, bench.Timing], a: str, b: str, target: float, statuses: list[str]
) -> tuple[str, str]:
    """``a / b`` as a table cell and its verdict against ``target`` (appended to ``statuses``)."""
    r, r_min, r_cpu = bench.ratios(t[a], t[b])
    v = bench.verdict(r, (r_min, r_cpu), target)
    statuses.append(v)
    return f"{r:.2f}", v


def main() -> int:
    p = bench.parser(__doc__)
    p.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "efficientnet_lite0"])
    p.add_argument("--composites", nargs="+", default=list(COMPOSITES), choices=ALL)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, help="rounds (default: 5, with --quick 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="112x112 input, 3 rounds by default")
    p.add_argument(
        "--before",
        metavar="REV",
        help="also time explain with the LRP rules of this git revision (a 'vs before' column)",
    )
    bench.add_threads(p)
    args = p.parse_args()
    if args.quick:
        args.size = 112
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    env, begun = bench.begin_run(args.threads)
    before = rules_at(args.before) if args.before else None
    rows, statuses = [], []
    for arch in args.models:
        found, extras, with_zennit = candidates(arch, tuple(args.composites), args.size, before)
        t = bench.timed(f"{arch} {args.size}x{args.size}", found, args.repeats, args.warmup)
        floor = t["floor"]
        for name in args.composites:
            ours = f"ours:{name}"
            vs_floor, v_floor = compare(t, ours, "floor", FLOOR_TARGET, statuses)
            arith_name = f"floor+extra:{name}"
            if arith_name in t:
                arith = f"{bench.paired_ratio(t[arith_name], floor):.2f}"
                vs_arith, v_arith = compare(t, ours, arith_name, FLOOR_TARGET, statuses)
            else:
                arith, vs_arith, v_arith = "1.00", vs_floor, v_floor
            zennit, vs_z, v_z = "-", "-", "-"
            if with_zennit:
                zennit = bench.seconds(t[f"zennit:{name}"].median)
                vs_z, v_z = compare(t, ours, f"zennit:{name}", ZENNIT_TARGET, statuses)
            before_floor, vs_before = "-", "-"
            if before is not None:
                old = t[f"before:{name}"]
                before_floor = f"{bench.paired_ratio(old, floor):.2f}"
                vs_before = f"{bench.paired_ratio(t[ours], old):.2f}"
            rows.append(
                [
                    arch,
                    name,
                    bench.seconds(t[ours].median),
                    zennit,
                    bench.seconds(floor.median),
                    extras[name].label(),
                    arith,
                    vs_floor,
                    v_floor,
                    vs_arith,
                    v_arith,
                    vs_z,
                    v_z,
                    before_floor,
                    vs_before,
                    f"{t[ours].spread:.2f}",
                ]
            )
    bench.print_header("LRP: seethrough vs Zennit and vs one forward+backward", env)
    print(f"- input: 1x3x{args.size}x{args.size}, {args.repeats} rounds")
    if args.before:
        print(f"- before: the LRP rules of {args.before}")
    print()
    headers = (
        "model",
        "composite",
        "ours s",
        "zennit s",
        "fwd+bwd s",
        "extra convs",
        "arith",
        "vs floor",
        f"<= {FLOOR_TARGET}",
        "vs arith",
        f"<= {FLOOR_TARGET}",
        "vs zennit",
        f"<= {ZENNIT_TARGET}",
        "before vs floor",
        "vs before",
        "spread",
    )
    print(bench.markdown_table(headers, rows))
    print(f"\n{bench.status_line(statuses)}")
    bench.log(f"total {bench.time.perf_counter() - begun:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
