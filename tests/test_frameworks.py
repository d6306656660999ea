"""Models of other frameworks load through their own loaders, and only when asked for."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import seethrough
from seethrough.errors import InvalidParameterError, MissingDependencyError
from seethrough.models import zoo

EXTRAS = ("keras", "onnx", "onnxruntime", "onnx2torch", "tensorflow", "h5py")


def test_the_library_imports_no_framework_extra():
    """`import seethrough`, a PyTorch model's predict and explain import none of them."""
    code = (
        "import sys\n"
        "import seethrough, seethrough.cli.main\n"
        "m = seethrough.load_model('synthetic_digits', weights='none')\n"
        "seethrough.explain(m, 'sample:chelsea', 'gradcam')\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {EXTRAS!r})\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("model.keras", "keras"),
        ("model.h5", "keras"),
        ("keras:MobileNetV2", "keras"),
        ("m.onnx", "onnx"),
    ],
)
def test_a_missing_extra_names_its_pip_command(tmp_path, monkeypatch, name, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in EXTRAS else real(n, *a)
    )
    target = name if name.startswith("keras:") else tmp_path / name
    if not name.startswith("keras:"):
        target.write_bytes(b"\0")
    with pytest.raises(MissingDependencyError, match=rf"pip install 'seethrough\[{extra}\]'"):
        seethrough.load_model(target)


def test_a_missing_framework_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidParameterError, match="does not exist"):
        seethrough.load_model(tmp_path / "nothing.onnx")
    assert zoo._framework_model("resnet18", "default") is None
    assert zoo._framework_model(tmp_path / "weights.safetensors", "default") is None


def test_cascading_randomization_refuses_a_model_of_another_framework():
    """Its weights are not the PyTorch module's parameters: randomising the adapter's copy would
    leave the model explained unchanged and report a false 'insensitive to weights'."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("the keras extra is not installed")
    from seethrough.errors import MethodNotApplicableError
    from seethrough.metrics import cascading_randomization

    model = seethrough.load_model("keras:MobileNetV2", weights="none", size=64)
    with pytest.raises(MethodNotApplicableError, match="keras model's weights"):
        cascading_randomization(model, "sample:chelsea", "gradcam", layers=1)
