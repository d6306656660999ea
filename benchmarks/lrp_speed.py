"""Speed of seethrough's LRP against Zennit at equal composite, and against the model's floor.

What is measured, for each model (defaults: resnet18 and vgg16 with random weights, and the
bundled efficientnet_lite0 with its real weights), on a random model input of ``--size``
(224 by default) at batch 1, all in ONE interleaved run per model (see ``_timing.py``: warm-up,
then round-robin over the candidates, median and min of the repeats):

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
  with frozen parameters (as ``explain`` runs the model).

Columns: ``vs floor`` is the paired median over rounds of ours / floor, target 1.20 (LRP is one
forward and one backward with modified rules); ``vs zennit`` ours / Zennit, target 1.00 (not
slower). Each verdict gets a ``?`` when min-over-min or the CPU-time ratio disagrees (see
``_timing.verdict``). The z+, alpha-beta and gamma rules need one or two extra convolutions per
layer (the modified weights' forward and transposed), which a plain gradient does not: they are
expected above 1.2x of the floor on a CPU, where a convolution's cost is its arithmetic.

Run: ``.venv/bin/python benchmarks/lrp_speed.py`` (``--quick``: 112x112, 2 rounds; about a
minute on a quiet 2-core machine). The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import _timing as bench
import torch
from torch import nn

import seethrough

FLOOR_TARGET = 1.20
ZENNIT_TARGET = 1.00
COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_alpha2_beta1")
ALL = (*COMPOSITES, "epsilon_plus_flat", "epsilon_gamma_box", "z_plus")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def zennit_composite(name: str, arch: str) -> Any:
    """Zennit's composite equal to ours called ``name``, with the canonizer of ``arch``."""
    from zennit import composites as zc
    from zennit import rules
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    from zennit.types import Convolution

    can = [ResNetCanonizer() if arch.startswith("resnet") else VGGCanonizer()]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    low, high = (0 - mean) / std, (1 - mean) / std
    if name == "epsilon":
        eps = [(Convolution, rules.Epsilon(1e-6)), (nn.Linear, rules.Epsilon(1e-6))]
        return zc.LayerMapComposite(zc.layer_map_base() + eps, canonizers=can)
    return {
        "epsilon_plus": lambda: zc.EpsilonPlus(canonizers=can),
        "epsilon_alpha2_beta1": lambda: zc.EpsilonAlpha2Beta1(canonizers=can),
        "epsilon_plus_flat": lambda: zc.EpsilonPlusFlat(canonizers=can),
        "epsilon_gamma_box": lambda: zc.EpsilonGammaBox(low=low, high=high, canonizers=can),
        "z_plus": lambda: zc.ExcitationBackprop(canonizers=can),
    }[name]()


def candidates(
    arch: str, composites: tuple[str, ...], size: int
) -> tuple[list[bench.Candidate], bool]:
    """The floor, ours and (where Zennit has canonizers for ``arch``) Zennit's, per composite."""
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
    for name in composites:

        def ours(name: str = name) -> None:
            seethrough.explain(vm, x, "lrp", target=target, composite=name)

        found.append(bench.Candidate(f"ours:{name}", ours))
    with_zennit = arch.startswith(("resnet", "vgg"))
    if with_zennit:
        from zennit.attribution import Gradient

        for name in composites:

            def theirs(name: str = name) -> None:
                with Gradient(module, zennit_composite(name, arch)) as attributor:
                    attributor(x, onehot)

            found.append(bench.Candidate(f"zennit:{name}", bench.frozen(module, theirs)))
    return found, with_zennit


def main() -> int:
    p = bench.parser(__doc__)
    p.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "efficientnet_lite0"])
    p.add_argument("--composites", nargs="+", default=list(COMPOSITES), choices=ALL)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="112x112 input, 2 rounds")
    bench.add_threads(p)
    args = p.parse_args()
    if args.quick:
        args.size, args.repeats = 112, 2
    env, begun = bench.begin_run(args.threads)
    rows, statuses = [], []
    for arch in args.models:
        found, with_zennit = candidates(arch, tuple(args.composites), args.size)
        t = bench.timed(f"{arch} {args.size}x{args.size}", found, args.repeats, args.warmup)
        floor = t["floor"]
        for name in args.composites:
            ours = t[f"ours:{name}"]
            r, r_min, r_cpu = bench.ratios(ours, floor)
            v_floor = bench.verdict(r, (r_min, r_cpu), FLOOR_TARGET)
            statuses.append(v_floor)
            zennit, vs_z, v_z = "-", "-", "-"
            if with_zennit:
                theirs = t[f"zennit:{name}"]
                z, z_min, z_cpu = bench.ratios(ours, theirs)
                zennit, vs_z = bench.seconds(theirs.median), f"{z:.2f}"
                v_z = bench.verdict(z, (z_min, z_cpu), ZENNIT_TARGET)
                statuses.append(v_z)
            rows.append(
                [
                    arch,
                    name,
                    bench.seconds(ours.median),
                    zennit,
                    bench.seconds(floor.median),
                    f"{r:.2f}",
                    v_floor,
                    vs_z,
                    v_z,
                    f"{ours.spread:.2f}",
                ]
            )
    bench.print_header("LRP: seethrough vs Zennit and vs one forward+backward", env)
    print(f"- input: 1x3x{args.size}x{args.size}, {args.repeats} rounds\n")
    headers = (
        "model",
        "composite",
        "ours s",
        "zennit s",
        "fwd+bwd s",
        "vs floor",
        f"<= {FLOOR_TARGET}",
        "vs zennit",
        f"<= {ZENNIT_TARGET}",
        "spread",
    )
    print(bench.markdown_table(headers, rows))
    print(f"\n{bench.status_line(statuses)}")
    bench.log(f"total {bench.time.perf_counter() - begun:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
