"""Speed of seethrough's input x gradient, deconvnet, DeepLIFT, DeepLIFT SHAP and noise tunnel
against their Captum counterparts, at equal settings, side by side in one run.

What is measured, for each model (resnet18 from torchvision with random weights, and the bundled
efficientnet_lite0 of ``seethrough.load_model()``), on one 224x224 random model input, the
explicit target class ``T`` (the top class, fixed before timing):

- ``seethrough.explain(module, x, method, target=T, ...)``, the whole public call, for
  ``input_x_gradient``, ``deconvnet``, ``deeplift`` (``baseline=0.0``), ``deeplift_shap`` (a
  set of ``--baselines`` noise images, all used: ``n_samples`` = their count,
  ``batch_size`` = their count) and ``noise_tunnel`` (``kind="smoothgrad"`` over saliency,
  ``--samples`` copies, ``stdev=0.5``, ``batch_size`` = the copies);
- Captum at the same settings: ``InputXGradient``, ``Deconvolution``, ``DeepLift(baselines=0.0)``,
  ``DeepLiftShap(baselines=the same set)`` (it runs every baseline in one batch) and
  ``NoiseTunnel(Saliency)`` (``nt_type="smoothgrad"``, ``nt_samples`` = ``nt_samples_batch_size``
  = the copies, ``stdevs=0.5``, ``abs=False``). Captum runs with the parameters frozen, as
  ``explain`` runs the model (fewer gradients to compute: the fair side for Captum).

Captum's DeepLift needs each activation module used once: torchvision's ResNet block calls its
ReLU twice, so every block gets a second ReLU module for its second call (:func:`distinct_relus`),
in the model both sides run. Captum handles ``nn.ReLU`` only: on efficientnet_lite0 (``nn.ReLU6``)
its Deconvolution leaves the activations unguided and its DeepLift gives them their plain
gradient, so those rows compare different algorithms (``same algorithm: no``, no verdict:
ours does the more work there, the rule at every ReLU6). Captum's DeepLift also loses summation to delta where a nonlinear module
follows another (a ReLU then a max pool: resnet18's stem), see
``tests/gradient/test_captum_oracle_new.py``.

``ours/captum`` is the paired median over rounds of our time over Captum's (see
``_timing.py``), ``@min`` min over min and ``cpu`` the paired CPU-time ratio; the target is
"not slower than the peer": ``ours/captum <= 1.00`` (``?``: a cross-check disagrees).

Run: ``.venv/bin/python benchmarks/gradient_oracle_speed.py [--repeats 5] [--threads 1]
[--methods noise_tunnel] [--models resnet18]``. The
Markdown table goes to stdout, progress to stderr. Its cost is 4 calls of each candidate per
model (1 warm-up, 3 rounds); with ``--threads 1`` on a 2-core machine
shared with other jobs (load average about 20) it took 14 minutes.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable

import _timing as bench
import torch
from torch import nn

import seethrough
from seethrough.models.vision_model import module_of

TARGET = 1.00
STDEV = 0.5
METHODS = ("input_x_gradient", "deconvnet", "deeplift", "deeplift_shap", "noise_tunnel")


def distinct_relus(model: nn.Module) -> nn.Module:
    """Give every torchvision ``BasicBlock`` a second ReLU module for its second ReLU call."""

    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)

    for block in model.modules():
        if type(block).__name__ == "BasicBlock":
            block.relu2 = nn.ReLU(inplace=True)
            block.forward = types.MethodType(forward, block)
    return model


def models() -> list[tuple[str, nn.Module]]:
    """``(name, module in eval mode)`` of the two models."""
    import torchvision

    resnet = distinct_relus(torchvision.models.resnet18(weights=None)).eval()
    return [("resnet18", resnet), ("efficientnet_lite0", module_of(seethrough.load_model()).eval())]


def pairs(
    model: nn.Module, x: torch.Tensor, t: int, baselines: torch.Tensor, samples: int
) -> list[tuple[str, Callable[[], object], Callable[[], object], bool]]:
    """``(method, ours, captum, same algorithm)`` for one model."""
    import captum.attr as ca

    relu6 = any(isinstance(m, nn.ReLU6) for m in model.modules())
    k = len(baselines)

    def ours(method: str, **params: object) -> Callable[[], object]:
        return lambda: seethrough.explain(model, x, method, target=t, **params)

    def theirs(fn: Callable[[], object]) -> Callable[[], object]:
        return bench.frozen(model, fn)

    return [
        (
            "input_x_gradient",
            ours("input_x_gradient"),
            theirs(lambda: ca.InputXGradient(model).attribute(x, target=t)),
            True,
        ),
        (
            "deconvnet",
            ours("deconvnet"),
            theirs(lambda: ca.Deconvolution(model).attribute(x, target=t)),
            not relu6,
        ),
        (
            "deeplift",
            ours("deeplift", baseline=0.0),
            theirs(lambda: ca.DeepLift(model).attribute(x, baselines=0.0, target=t)),
            not relu6,
        ),
        (
            f"deeplift_shap ({k} baselines)",
            ours("deeplift_shap", baseline=baselines, n_samples=k, batch_size=k),
            theirs(lambda: ca.DeepLiftShap(model).attribute(x, baselines=baselines, target=t)),
            not relu6,
        ),
        (
            f"noise_tunnel smoothgrad ({samples})",
            ours("noise_tunnel", n_samples=samples, stdev=STDEV, batch_size=samples),
            theirs(
                lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                    x,
                    nt_type="smoothgrad",
                    nt_samples=samples,
                    nt_samples_batch_size=samples,
                    stdevs=STDEV,
                    target=t,
                    abs=False,
                )
            ),
            True,
        ),
    ]


def main() -> None:
    p = bench.parser(__doc__)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per candidate")
    p.add_argument("--baselines", type=int, default=8, help="baselines of DeepLIFT SHAP")
    p.add_argument("--samples", type=int, default=8, help="noisy copies of the noise tunnel")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD")
    p.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_lite0"])
    bench.add_threads(p)
    args = p.parse_args()
    env, start = bench.begin_run(args.threads)
    rows, statuses = [], []
    for name, model in models():
        if name not in args.models:
            continue
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        baselines = torch.randn(
            args.baselines, 3, 224, 224, generator=torch.Generator().manual_seed(1)
        )
        with torch.no_grad():
            t = int(model(x).argmax(1))
        candidates, names = [], []
        for method, ours, captum, same in pairs(model, x, t, baselines, args.samples):
            if method.split()[0] not in args.methods:
                continue
            candidates += [
                bench.Candidate(f"ours {method}", ours),
                bench.Candidate(f"captum {method}", captum),
            ]
            names.append((method, same))
        timings = bench.timed(name, candidates, args.repeats, args.warmup)
        for method, same in names:
            a, b = timings[f"ours {method}"], timings[f"captum {method}"]
            ratio, at_min, cpu = bench.ratios(a, b)
            status = bench.verdict(ratio, (at_min, cpu), TARGET) if same else "-"
            if same:
                statuses.append(status)
            rows.append(
                [
                    name,
                    method,
                    "yes" if same else "no",
                    bench.seconds(a.median),
                    bench.seconds(b.median),
                    f"{ratio:.2f}",
                    f"{at_min:.2f}",
                    f"{cpu:.2f}",
                    f"<= {TARGET:.2f}",
                    status,
                ]
            )
    bench.print_header("Gradient methods vs Captum", env)
    print()
    headers = (
        "model",
        "method",
        "same algorithm",
        "ours s",
        "captum s",
        "ours/captum",
        "@min",
        "cpu",
        "target",
        "status",
    )
    print(bench.markdown_table(headers, rows))
    print(f"\n{bench.status_line(statuses)}; total {bench.seconds(time.perf_counter() - start)} s")


if __name__ == "__main__":
    main()
