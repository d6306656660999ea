"""Every registered method and the faithfulness metrics on a GPU: they run, agree with the CPU,
leave the model as it was, and how fast they are next to the model's floor and Captum.

Models: the bundled ``efficientnet_lite0`` (real weights) and ``resnet18`` (random weights) on
the photo ``chelsea``; a small timm ViT (random weights) for the attention methods and for CAMs
and saliency on tokens.

Table 1, agreement (TF32 off, so the GPU computes in full float32 like the CPU): each method
with light settings (``LIGHT``) on the GPU and on the CPU with the same seed. ``corr`` is the
Pearson correlation of the two raw maps, ``rel`` the largest difference over the CPU map's
largest magnitude; both targets must match. Feature inversion runs an Adam optimisation whose
normalised steps amplify rounding, so only its loss drop is compared. SmoothGrad and Gradient
SHAP draw their noise on the GPU (other numbers than the CPU's), so they only need the same
target and a correlation above 0.5. After every GPU call the
model must hold the very same parameter tensors (same memory, values, ``requires_grad``,
``.grad``, train / eval flags) and no hooks.

Table 2, speed on the GPU (TF32 at PyTorch's defaults, as users run): each method with its
default settings, median of ``--repeats`` interleaved calls (each synchronised), and for
reference the model's forward and forward+backward at batch 1. ``ours/captum`` is the median
over rounds of the per-round ratio (below 1: ours is faster). Captum at equal settings
beside ours where it has the method: saliency, integrated gradients (50 steps, internal batch
50), SmoothGrad (16 samples in one batch), occlusion (window 32, stride 16, 64 per pass),
Kernel SHAP and LIME (1000 samples on our SLIC segments, 64 per pass).

Run: ``python benchmarks/device_check.py [--device cuda] [--json PATH]``; ``--device cpu
--quick`` checks the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from _timing import (
    Candidate,
    environment,
    markdown_table,
    paired_ratio,
    print_header,
    run_interleaved,
)
from _timing import (
    log as _log,
)
from torch import nn

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.images import sample_image
from seethrough.methods.perturbation import segment

LIGHT: dict[str, dict[str, Any]] = {
    "scorecam": {"batch_size": 64},
    "lime": {"n_samples": 200},
    "kernelshap": {"n_samples": 200},
    "rise": {"n_samples": 200},
    "occlusion": {"window": 32, "stride": 32},
    "integrated_gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 8},
    "gradient_shap": {"n_samples": 8},
    "feature_inversion": {"n_steps": 30},
}
NOISE_ON_DEVICE = ("smoothgrad", "gradient_shap")  # other noise than the CPU's: loose check
VIT_METHODS = ("attention_rollout", "gradcam", "saliency", "integrated_gradients")
BATCH = 64  # perturbations per pass, ours and Captum's, in table 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _state(model: nn.Module) -> list[Any]:
    return [
        [m.training for m in model.modules()],
        [
            (n, p.data_ptr(), p.stride(), p.requires_grad, p.grad)
            for n, p in model.named_parameters()
        ],
        [p.detach().clone() for p in model.parameters()],
    ]


def _same_state(before: list[Any], model: nn.Module) -> bool:
    after = _state(model)
    return (
        before[0] == after[0]
        and all(a[:4] == b[:4] and a[4] is b[4] for a, b in zip(before[1], after[1], strict=True))
        and all(torch.equal(a, b) for a, b in zip(before[2], after[2], strict=True))
        and count_hooks(model) == 0
    )


def _models(device: torch.device, quick: bool) -> list[tuple[str, Any, Any, tuple[str, ...]]]:
    """(name, GPU model, CPU copy, methods) per model."""
    import timm

    all_methods = tuple(m.name for m in seethrough.list_methods() if m.family != "attention")
    out = []
    for name, weights in (("efficientnet_lite0", "default"), ("resnet18", "none")):
        if quick and name == "resnet18":
            continue
        cpu = seethrough.load_model(name, weights=weights)
        gpu = seethrough.load_model(name, weights=weights, device=device)
        gpu.module.load_state_dict(cpu.module.state_dict())  # same random weights
        out.append((name, gpu, cpu, all_methods))
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10).eval()
    vit_gpu = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10).eval()
    vit_gpu.load_state_dict(vit.state_dict())
    out.append(("vit_tiny (random)", vit_gpu.to(device), vit, VIT_METHODS))
    return out


def _input(model: Any, device: torch.device) -> torch.Tensor:
    image = sample_image("chelsea")
    if isinstance(model, nn.Module):  # the ViT: a plain module, give it a ready input
        g = torch.Generator().manual_seed(0)
        return torch.rand(3, 224, 224, generator=g).to(device)
    return model.preprocess(image)[0].to(device)


def agreement(device: torch.device, quick: bool) -> list[list[str]]:
    """Table 1 rows."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name, gpu, cpu, methods in _models(device, quick):
        gmod = gpu.module if hasattr(gpu, "module") else gpu
        x_gpu, x_cpu = _input(gpu, device), _input(cpu, torch.device("cpu"))
        for method in methods:
            params = LIGHT.get(method, {})
            before = _state(gmod)
            start = time.perf_counter()
            try:
                g = seethrough.explain(gpu, x_gpu, method, **params)
                _sync(device)
                c = seethrough.explain(cpu, x_cpu, method, **params)
            except Exception as exc:  # a failure is a result: report it, go on
                rows.append([name, method, "ERROR", f"{type(exc).__name__}: {exc}"[:80], *"-----"])
                _log(f"{name} {method}: {type(exc).__name__}: {exc}")
                continue
            state = "ok" if _same_state(before, gmod) else "CHANGED"
            a, b = np.asarray(g.raw, np.float64).ravel(), np.asarray(c.raw, np.float64).ravel()
            corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else math.nan
            rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
            if method in NOISE_ON_DEVICE and device.type != "cpu":
                verdict = "ok" if g.target == c.target and corr > 0.5 else "DIFFERS"
                detail = "noise drawn on the device"
            elif method == "feature_inversion":
                drop = [float(e.stats["loss_ratio"]) for e in (g, c)]
                close = abs(math.log(drop[0] / drop[1])) < 0.1
                verdict = "ok" if g.target == c.target and min(drop) > 1 and close else "DIFFERS"
                detail = f"loss / {drop[0]:.3g} (gpu), / {drop[1]:.3g} (cpu)"
            else:
                verdict = (
                    "ok" if g.target == c.target and (corr > 0.999 or rel < 1e-3) else "DIFFERS"
                )
                detail = ""
            rows.append(
                [
                    name,
                    method,
                    verdict,
                    detail,
                    str(g.target),
                    f"{corr:.6f}",
                    f"{rel:.1e}",
                    state,
                    f"{time.perf_counter() - start:.1f}",
                ]
            )
            _log(f"{name} {method}: {verdict} corr {corr:.6f} rel {rel:.1e} state {state}")
        if hasattr(gpu, "module"):
            rows += _metric_rows(name, gpu, cpu, x_gpu, x_cpu, gmod, device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    return rows


def _metric_rows(name, gpu, cpu, x_gpu, x_cpu, gmod, device) -> list[list[str]]:
    """Deletion and insertion (the perturbation engine under the metrics) on both devices."""
    from seethrough import metrics

    sal = seethrough.explain(cpu, x_cpu, "gradcam").map
    rows = []
    for kind in ("deletion", "insertion"):
        before = _state(gmod)
        fn = getattr(metrics, kind)
        g = fn(gpu, x_gpu, sal, steps=32)
        c = fn(cpu, x_cpu, sal, steps=32)
        state = "ok" if _same_state(before, gmod) else "CHANGED"
        gap = float(np.abs(np.asarray(g.scores) - np.asarray(c.scores)).max())
        verdict = "ok" if gap < 1e-3 else "DIFFERS"
        rows.append(
            [
                name,
                f"metric {kind}",
                verdict,
                f"AUC gpu {g.auc:.4f} cpu {c.auc:.4f}",
                "-",
                "-",
                f"{gap:.1e}",
                state,
                "-",
            ]
        )
    return rows


def speed(device: torch.device, repeats: int, quick: bool) -> list[list[str]]:
    """Table 2 rows (``quick``: 50 samples and 8 steps instead of 1000 and 50)."""
    rows: list[list[str]] = []
    for name, gpu, _, methods in _models(device, quick):
        if hasattr(gpu, "module"):
            rows += _speed_rows(name, gpu, methods, device, repeats, quick)
    return rows


def _speed_rows(
    name: str, gpu: Any, methods: tuple[str, ...], device: torch.device, repeats: int, quick: bool
) -> list[list[str]]:
    """Table 2 rows of one model."""
    from captum.attr import (
        IntegratedGradients,
        KernelShap,
        Lime,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    n, steps = (50, 8) if quick else (1000, 50)
    rows = []
    net = gpu.module
    x = _input(gpu, device)[None]
    with torch.no_grad():
        target = int(net(x).argmax(1))
    labels = segment(gpu.preprocessing.display_image(sample_image("chelsea")), "slic")
    mask = torch.from_numpy(labels).long().to(device)[None, None]

    def probs(inp: torch.Tensor, net: nn.Module = net) -> torch.Tensor:
        return net(inp).softmax(1)

    def synced(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            fn()
            _sync(device)

        return run

    def fwd_bwd() -> None:
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(net(xi)[0, target], xi)

    def fwd() -> None:
        with torch.no_grad():
            net(x)

    ours: dict[str, dict[str, Any]] = {m: {} for m in methods}
    ours["integrated_gradients"] = {"n_steps": steps, "batch_size": steps, "baseline": 0.0}
    ours["smoothgrad"] = {"n_samples": 16, "batch_size": 16, "noise": 0.15}
    ours["occlusion"] = {"window": 32, "stride": 16, "hide": 0.0, "batch_size": BATCH}
    for m in ("lime", "kernelshap"):
        ours[m] = {"segments": labels, "n_samples": n, "hide": 0.0, "batch_size": BATCH}
    sigma = float(0.15 * (x.max() - x.min()))
    captum = {
        "saliency": lambda: Saliency(net).attribute(x, target=target, abs=False),
        "integrated_gradients": lambda: IntegratedGradients(net).attribute(
            x, target=target, baselines=0.0, n_steps=steps, internal_batch_size=steps
        ),
        "smoothgrad": lambda: NoiseTunnel(Saliency(net)).attribute(
            x,
            target=target,
            nt_type="smoothgrad",
            nt_samples=16,
            nt_samples_batch_size=16,
            stdevs=sigma,
            abs=False,
        ),
        "occlusion": lambda: Occlusion(probs).attribute(
            x,
            sliding_window_shapes=(3, 32, 32),
            strides=(3, 16, 16),
            baselines=0.0,
            target=target,
            perturbations_per_eval=BATCH,
        ),
    }
    on_segments = {"baselines": 0.0, "feature_mask": mask, "n_samples": n}
    for m, cls in (("kernelshap", KernelShap), ("lime", Lime)):
        captum[m] = partial(
            cls(probs).attribute, x, target=target, perturbations_per_eval=BATCH, **on_segments
        )
    if quick:  # the methods with a Captum peer, and Grad-CAM
        methods = tuple(m for m in methods if m in captum or m == "gradcam")
    cands = [Candidate("floor fwd", synced(fwd)), Candidate("floor fwd+bwd", synced(fwd_bwd))]
    for m in methods:
        cands.append(
            Candidate(
                f"ours {m}",
                synced(lambda m=m: seethrough.explain(gpu, x[0], m, target=target, **ours[m])),
            )
        )
        if m in captum:
            cands.append(Candidate(f"captum {m}", synced(captum[m])))
    _log(f"{name}: timing {len(cands)} candidates, {repeats} rounds")
    t = run_interleaved(cands, repeats, warmup=1, progress=_log)
    f, fb = t["floor fwd"].median, t["floor fwd+bwd"].median
    rows.append([name, "(floor) forward, batch 1", f"{f * 1e3:.2f}", "-", "-", "-"])
    rows.append([name, "(floor) forward+backward, batch 1", f"{fb * 1e3:.2f}", "-", "-", "-"])
    for m in methods:
        mine = t[f"ours {m}"].median
        theirs = t[f"captum {m}"].median if m in captum else math.nan
        rows.append(
            [
                name,
                m,
                f"{mine * 1e3:.2f}",
                f"{mine / f:.1f}",
                "-" if math.isnan(theirs) else f"{theirs * 1e3:.2f}",
                "-"
                if math.isnan(theirs)
                else f"{paired_ratio(t[f'ours {m}'], t[f'captum {m}']):.2f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="one model, 2 rounds: checks the script")
    p.add_argument("--tables", nargs="+", type=int, default=[1, 2], choices=(1, 2))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start = time.perf_counter()
    env = environment()
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    print_header("Every method on " + str(device), env)
    if 1 in args.tables:
        print("\n## Table 1: GPU against CPU, same settings and seeds (TF32 off)\n")
        print(
            markdown_table(
                ("model", "method", "agree", "note", "target", "corr", "rel", "state", "s"),
                agreement(device, args.quick),
            )
        )
    if 2 in args.tables:
        print("\n## Table 2: speed on the device (ms per call, median)\n")
        print(
            markdown_table(
                ("model", "method", "ours ms", "x forward", "captum ms", "ours/captum (paired)"),
                speed(device, 2 if args.quick else args.repeats, args.quick),
            )
        )
    print(f"\ntotal run time: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
