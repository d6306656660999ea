"""Speed of the newer CAM methods against the peer implementation each is checked against.

Each pair runs at equal settings on the same model, input and layer, interleaved in ONE run
(see ``_timing.py``: warm-up, then round-robin, median and min of the repeats):

| ours (``seethrough.explain``) | peer |
|---|---|
| ``ablationcam`` (``batch_size``) | pytorch-grad-cam ``AblationCAM`` (same ``batch_size``) |
| ``fullgrad`` (``normalize="channel"``) | pytorch-grad-cam ``FullGrad`` |
| ``gradcam_elementwise`` | pytorch-grad-cam ``GradCAMElementWise`` |
| ``kpcacam`` (sigmoid kernel) | pytorch-grad-cam ``KPCA_CAM`` (scikit-learn's ``KernelPCA``) |
| ``sscam`` (``n_samples``, ``noise``) | torchcam ``SSCAM`` (same ``num_samples``, ``std``) |
| ``iscam`` (``n_samples``) | torchcam ``ISCAM`` (same ``num_samples``) |
| ``smoothgradcam++`` (``n_samples``) | torchcam ``SmoothGradCAMpp`` (same ``num_samples``) |

``ours`` is the whole public call (input checks, the method, upsampling to the input, numpy
conversion); the peer's object is built and its hooks released inside each timed call, as
``explain`` builds its method per call, and both explain the top class. ``ratio`` is the median
over rounds of ours / peer in the same round; ``ratio@min`` min(ours) / min(peer); ``cpu ratio``
the paired median of process CPU times. Target: not slower than the peer (ratio <= 1.00),
``?`` when a cross-check disagrees (re-run on a quieter machine or with ``--threads 1``).
LeGrad has no peer here: torchcam's ``LeGrad`` runs on torchvision's ViT only, the library's on
timm's.

Models: ResNet-18 (torchvision, random weights) and the bundled EfficientNet-Lite0; the layer
is each model's default CAM layer. The Score-CAM family and Ablation-CAM cost one forward per
channel (times ``n_samples``): ``--size`` and ``--samples`` keep them affordable on a CPU.

Run: ``.venv/bin/python benchmarks/cam_oracle_speed.py [--size 224] [--json PATH]``.
The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's AblationCAM progress bars

import _timing as bench  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import seethrough  # noqa: E402
from seethrough.core.layers import resolve_layer  # noqa: E402

METHODS = (
    "ablationcam",
    "fullgrad",
    "gradcam_elementwise",
    "kpcacam",
    "sscam",
    "iscam",
    "smoothgradcam++",
)
GRAD_CAM = {
    "ablationcam": "AblationCAM",
    "fullgrad": "FullGrad",
    "gradcam_elementwise": "GradCAMElementWise",
    "kpcacam": "KPCA_CAM",
}
TORCHCAM = {"sscam": "SSCAM", "iscam": "ISCAM", "smoothgradcam++": "SmoothGradCAMpp"}
TARGET = 1.0


def _ours_params(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Our parameters at the peer's settings."""
    return {
        "ablationcam": {"batch_size": args.batch_size},
        "fullgrad": {"normalize": "channel"},
        "sscam": {"n_samples": args.samples, "noise": 2.0, "batch_size": args.batch_size},
        "iscam": {"n_samples": args.samples, "batch_size": args.batch_size},
        "smoothgradcam++": {"n_samples": args.smooth_samples},
    }.get(method, {})


def _ours(vm: Any, x: torch.Tensor, method: str, args: argparse.Namespace) -> bench.Candidate:
    params = _ours_params(method, args)

    def run() -> None:
        seethrough.explain(vm, x, method, **params)

    return bench.Candidate(f"ours:{method}", run)


def _grad_cam(
    module: nn.Module, layer: nn.Module, x: torch.Tensor, method: str, args: argparse.Namespace
) -> Callable[[], None]:
    import pytorch_grad_cam

    cls = getattr(pytorch_grad_cam, GRAD_CAM[method])
    kw = {"batch_size": args.batch_size} if method == "ablationcam" else {}
    layers = [] if method == "fullgrad" else [layer]

    def run() -> None:
        cam = cls(model=module, target_layers=layers, **kw)
        try:
            cam(input_tensor=x, targets=None)
        finally:  # not `with cam`: its __exit__ swallows IndexError
            cam.activations_and_grads.release()

    return run


def _torchcam(
    module: nn.Module, layer_name: str, x: torch.Tensor, method: str, args: argparse.Namespace
) -> Callable[[], None]:
    import torchcam.methods

    cls = getattr(torchcam.methods, TORCHCAM[method])
    if method == "smoothgradcam++":
        kw: dict[str, Any] = {"num_samples": args.smooth_samples}
    else:
        kw = {"num_samples": args.samples, "batch_size": args.batch_size}
        kw |= {"std": 2.0} if method == "sscam" else {}

    def run() -> None:
        extractor = cls(module, layer_name, input_shape=tuple(x.shape[1:]), **kw)
        try:
            with torch.no_grad():
                out = module(x)
            top = out.argmax(dim=1).tolist()
            with torch.enable_grad():
                extractor(class_idx=top, scores=out)
        finally:
            extractor.remove_hooks()

    return run


def _theirs(
    vm: Any, layer_name: str, layer: nn.Module, x: torch.Tensor, method: str, args: Any
) -> bench.Candidate:
    module = vm.module
    if method in GRAD_CAM:
        run = _grad_cam(module, layer, x, method, args)
    else:
        run = _torchcam(module, layer_name, x, method, args)

    def cleanup() -> None:  # drop the parameter gradients a peer's backward left behind
        module.zero_grad(set_to_none=True)

    return bench.Candidate(f"theirs:{method}", run, cleanup=cleanup)


HEADERS = bench.PEER_HEADERS


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    bench.add_models(p)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD")
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--batch-size", type=int, default=32, help="masked/ablated inputs per pass")
    p.add_argument("--samples", type=int, default=2, help="SS-CAM / IS-CAM samples (both)")
    p.add_argument("--smooth-samples", type=int, default=4, help="Smooth Grad-CAM++ samples")
    bench.add_rounds(p, repeats=3, warmup=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    bench.add_threads(p)
    p.add_argument("--json", help="also save the raw numbers here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or min(args.samples, args.smooth_samples) < 1:
        p.error("--repeats and the sample counts must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pairs; print the environment header and the Markdown table."""
    args = _parse(argv)
    env, wall = bench.begin_run(args.threads)
    table: list[list[str]] = []
    statuses: list[str] = []
    results: list[dict[str, Any]] = []
    for name in args.models:
        weights = "default" if name == "efficientnet_lite0" else "none"
        vm = seethrough.load_model(name, weights=weights)
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.randn(1, 3, args.size, args.size, generator=gen)
        layer_name, layer = resolve_layer(vm.module, None, x, vm.default_layer)
        candidates = []
        for method in args.methods:
            candidates += [
                _ours(vm, x, method, args),
                _theirs(vm, layer_name, layer, x, method, args),
            ]
        label = f"{name}, layer {layer_name}, input {args.size}x{args.size}"
        timings = bench.timed(label, candidates, args.repeats, args.warmup)
        for method in args.methods:
            ours, theirs = timings[f"ours:{method}"], timings[f"theirs:{method}"]
            columns = bench.ratio_columns(ours, theirs)
            checks = (columns["ratio_at_min"], columns["cpu_ratio"])
            status = bench.verdict(columns["ratio"], checks, TARGET)
            statuses.append(status)
            peer = GRAD_CAM.get(method) or TORCHCAM[method]
            table.append(bench.peer_row(name, method, ours, theirs, peer, columns, TARGET, status))
            results.append({"model": name, "method": method, "peer": peer, **columns})
    total = time.perf_counter() - wall
    bench.print_header("New CAMs against their peers", env)
    print(
        f"- input {args.size}x{args.size} random (seed {args.seed}), batch 1; "
        f"{args.repeats} rounds, warm-up {args.warmup}; masked/ablated inputs per pass "
        f"{args.batch_size}; SS-CAM/IS-CAM samples {args.samples}; Smooth Grad-CAM++ samples "
        f"{args.smooth_samples}"
    )
    print(f"- total benchmark time: {total:.0f} s\n")
    print(bench.markdown_table(HEADERS, table))
    print(f"\n{bench.status_line(statuses)}. ratio = median over rounds of ours / peer.")
    if args.json:
        from pathlib import Path

        bench.save_json(Path(args.json), env, args, total, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
