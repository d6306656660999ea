"""A TorchScript file is a program: the library, the CLI and the dashboard run none of it unless
every operator in its code is a pure tensor operator, and the dashboard takes none without
``--allow-torchscript``. Uploaded weights live in a private folder that goes with the session."""

from __future__ import annotations

import gc
import io
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import seethrough
from seethrough.cli.main import main
from seethrough.dashboard import service as svc
from seethrough.errors import InvalidParameterError, UnsafeModelError
from seethrough.models.torchscript import ALLOWED_OPERATORS, check_module, load_torchscript

SECRET = b"secret bytes of a file on the server"


@pytest.fixture(autouse=True)
def _quiet_jit():
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still supported
        warnings.simplefilter("ignore", FutureWarning)
        yield


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(SECRET)
    return path


def script_bytes(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# hostile modules: each writes into (or reads) the victim file when its code runs


class Writer(nn.Module):
    """Overwrites the first 8 bytes of a file with 'A' in forward."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8).fill_(65)
        return x.mean((2, 3)) + hit.sum() * 0


class Reader(nn.Module):
    """Returns a file's first 8 bytes as its logits: the top-k indices leak the content."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, shared=False, size=8, dtype=torch.uint8)
        return data.float().unsqueeze(0).expand(x.shape[0], 8)


def _write_file(path: str) -> torch.Tensor:
    return torch.from_file(path, shared=True, size=8, dtype=torch.uint8).fill_(65)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    _write = torch.jit.script(_write_file)


class CallsFunction(Writer):
    """Writes through a scripted free function that forward calls."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) + _write(self.path).sum() * 0


class Helper(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def touch(self) -> torch.Tensor:
        return torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8).fill_(65)


class CallsMethod(nn.Module):
    """Writes through an exported method of a submodule that forward calls."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.helper = Helper(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.helper(x).mean((2, 3)) + self.helper.touch().sum() * 0


class SetState(nn.Module):
    """Writes in ``__setstate__``, which ``torch.jit.load`` runs while it unpacks the file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return self.path, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        _write(state[0])
        self.path = state[0]
        self.training = state[1]


class Hooked(Writer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def _hook(module: Hooked, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    return output + _write(module.path).sum() * 0


def with_hook(path: str) -> nn.Module:
    """Clean forwards, but a submodule's forward hook writes (TorchScript compiles hooks too)."""
    module = Hooked(path)
    module.register_forward_hook(_hook)
    return nn.Sequential(module)


class Prints(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("hello")
        return x.mean((2, 3))


HOSTILE: dict[str, tuple[Callable[[str], nn.Module], str, str]] = {
    # name: (builder, refused operator, where the message says it is)
    "writer": (Writer, "aten::from_file", "method 'forward'"),
    "reader": (Reader, "aten::from_file", "method 'forward'"),
    "function": (CallsFunction, "aten::from_file", "forward' (in a function or method"),
    "method": (CallsMethod, "aten::from_file", "method 'helper.touch'"),
    "hook": (with_hook, "aten::from_file", "method 'forward' (in a function or method"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_hostile_files_do_what_they_say_without_the_check(tmp_path, victim, name):
    """The control: run unchecked, each file reads or writes the victim file."""
    build, _, _ = HOSTILE[name]
    path = tmp_path / f"{name}.pt"
    path.write_bytes(script_bytes(build(str(victim))))
    out = torch.jit.load(str(path))(torch.zeros(1, 3, 8, 8))
    if name == "reader":
        assert bytes(out[0].to(torch.uint8).tolist()) == SECRET[:8]
    else:
        assert victim.read_bytes() == b"A" * 8 + SECRET[8:]


def test_setstate_runs_while_loading_without_the_check(tmp_path, victim):
    path = tmp_path / "setstate.pt"
    path.write_bytes(script_bytes(SetState(str(victim))))
    assert victim.read_bytes() == SECRET  # scripting and saving do not run it
    torch.jit.load(str(path))
    assert victim.read_bytes() == b"A" * 8 + SECRET[8:]


# ---------------------------------------------------------------------------------------------
# library


@pytest.mark.parametrize("name", list(HOSTILE))
def test_library_refuses_non_tensor_operators(tmp_path, victim, name):
    build, operator, where = HOSTILE[name]
    path = tmp_path / f"{name}.pt"
    path.write_bytes(script_bytes(build(str(victim))))
    with pytest.raises(UnsafeModelError) as info:
        seethrough.load_model(path)
    message = str(info.value)
    assert operator in message and where in message and str(path) in message
    assert "is a program" in message and "arch=" in message
    assert victim.read_bytes() == SECRET


def test_setstate_is_refused_before_loading(tmp_path, victim):
    path = tmp_path / "setstate.pt"
    path.write_bytes(script_bytes(SetState(str(victim))))
    with pytest.raises(UnsafeModelError, match="__setstate__.*while it loads"):
        seethrough.load_model(path)
    assert victim.read_bytes() == SECRET


class Commented(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no __setstate__ here: the word is in a comment, which the debug records keep
        return x.mean((2, 3))


def test_setstate_in_a_comment_is_not_refused(tmp_path):
    path = tmp_path / "commented.pt"
    path.write_bytes(script_bytes(Commented()))
    assert load_torchscript(path)(torch.ones(1, 3, 4, 4)).shape == (1, 3)


def test_print_is_refused(tmp_path):
    path = tmp_path / "prints.pt"
    path.write_bytes(script_bytes(Prints()))
    with pytest.raises(UnsafeModelError, match=r"prim::Print"):
        load_torchscript(path)


# The test operator library lives as long as the process. Freeing a torch.library.Library drops its
# operator, but TorchScript's table of builtins keeps the operator's id(): any later object that gets
# the same address (a conv layer's padding list, say) is then taken for that builtin, and scripting a
# model fails at random with "builtin cannot be used as a value".
_TEST_LIBRARIES: list[torch.library.Library] = []


def _test_operator_library() -> None:
    if not _TEST_LIBRARIES:
        lib = torch.library.Library("seethrough_test", "DEF")
        lib.define("double(Tensor x) -> Tensor")
        lib.impl("double", lambda x: x * 2, "CPU")
        _TEST_LIBRARIES.append(lib)


def test_custom_operator_namespaces_are_refused(tmp_path):
    _test_operator_library()

    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.seethrough_test.double(x).mean((2, 3))

    path = tmp_path / "custom.pt"
    path.write_bytes(script_bytes(Custom()))
    with pytest.raises(UnsafeModelError, match="seethrough_test::double"):
        load_torchscript(path)


def test_a_flatbuffer_disguised_as_a_zip_is_refused(tmp_path):
    data = bytearray(script_bytes(nn.Flatten()))
    data[4:8] = b"PTMF"  # torch.jit.load would read the file as a flatbuffer module
    path = tmp_path / "odd.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeModelError, match="flatbuffer"):
        load_torchscript(path)


def test_not_an_archive(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torchscript archive")
    with pytest.raises(InvalidParameterError):
        load_torchscript(path)


def test_refused_operators():
    for op in ("aten::from_file", "aten::save", "prim::Print", "aten::as_strided", "prim::fork"):
        assert op not in ALLOWED_OPERATORS
    for op in ("aten::conv2d", "aten::relu_", "aten::dropout_", "prim::If", "aten::softmax"):
        assert op in ALLOWED_OPERATORS


def test_check_module_names_a_submodule_method_or_hook(victim):
    module = torch.jit.script(CallsMethod(str(victim)))
    with pytest.raises(UnsafeModelError, match=r"'helper\.touch' uses aten::from_file"):
        check_module(module, "m.pt")
    hooked = Hooked(str(victim))
    hooked.register_forward_hook(_hook)
    with pytest.raises(UnsafeModelError, match=r"'_hook \(forward hook\)' \(in a function"):
        check_module(torch.jit.script(hooked), "m.pt")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_a_traced_model_loads(tmp_path):
    path = tmp_path / "traced.pt"
    torch.jit.trace(Tiny().eval(), torch.zeros(1, 3, 16, 16)).save(str(path))
    model = seethrough.load_model(path)
    assert model.num_classes == 5


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: __import__("torchvision").models.resnet18(), id="resnet18"),
        pytest.param(
            lambda: __import__("torchvision").models.mobilenet_v3_small(), id="mobilenet_v3_small"
        ),
        pytest.param(
            lambda: __import__("timm").create_model("efficientnet_lite0"), id="efficientnet_lite0"
        ),
    ],
)
def test_common_scripted_models_load(tmp_path, build):
    torch.manual_seed(0)
    net = build().eval()
    path = tmp_path / "model.pt"
    torch.jit.script(net).save(str(path))
    model = seethrough.load_model(path)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), net(x))


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_refuses_in_one_line_and_leaves_the_file_alone(tmp_path, victim, capsys):
    path = tmp_path / "x.pt"
    path.write_bytes(script_bytes(Writer(str(victim))))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "sample:chelsea", "--model", str(path)])
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "aten::from_file" in lines[0]
    assert "Traceback" not in err
    assert victim.read_bytes() == SECRET


def test_cli_refuses_the_reader(tmp_path, victim, capsys):
    path = tmp_path / "r.pt"
    path.write_bytes(script_bytes(Reader(str(victim))))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "sample:chelsea", "--model", str(path), "-k", "8"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and "aten::from_file" in err and "class" not in out


# ---------------------------------------------------------------------------------------------
# dashboard service


@pytest.fixture
def no_torchscript(monkeypatch):
    monkeypatch.delenv(svc.TORCHSCRIPT_ENV, raising=False)


@pytest.fixture
def torchscript_on(monkeypatch):
    monkeypatch.setenv(svc.TORCHSCRIPT_ENV, "1")


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.bin", "evil.ts"])
def test_dashboard_refuses_torchscript_by_default(tmp_path, victim, no_torchscript, name):
    assert not svc.torchscript_allowed()
    folder = tmp_path / "uploads"
    with pytest.raises(UnsafeModelError) as info:
        svc.store_upload(script_bytes(Writer(str(victim))), name, folder)
    message = str(info.value)
    assert name in message and "--allow-torchscript" in message and "state dict" in message
    assert not folder.exists() or not any(folder.iterdir())
    assert victim.read_bytes() == SECRET


def test_dashboard_model_spec_refuses_torchscript_by_default(tmp_path, no_torchscript):
    path = tmp_path / "clean.pt"
    torch.jit.script(Tiny()).save(str(path))
    with pytest.raises(UnsafeModelError, match="my.pt is a TorchScript file"):
        svc.ModelSpec(name=str(path), label="my.pt").load()
    assert svc.ModelSpec(name=str(path)).load().num_classes == 5  # the library itself loads it


@pytest.mark.parametrize("name", ["writer", "reader"])
def test_dashboard_with_the_flag_still_checks_operators(tmp_path, victim, torchscript_on, name):
    assert svc.torchscript_allowed()
    build, operator, _ = HOSTILE[name]
    path = svc.store_upload(script_bytes(build(str(victim))), "evil.ts", tmp_path)
    spec = svc.ModelSpec(name=str(path), label="evil.ts")
    with pytest.raises(UnsafeModelError) as info:
        svc.MODELS.get(spec)
    assert operator in str(info.value) and "evil.ts" in str(info.value)
    assert str(tmp_path) not in str(info.value)
    assert victim.read_bytes() == SECRET


def test_dashboard_with_the_flag_loads_a_clean_file(tmp_path, torchscript_on):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    path = svc.store_upload(buf.getvalue(), "tiny.ts", tmp_path)
    assert svc.ModelSpec(name=str(path), label="tiny.ts").load().num_classes == 5


# ---------------------------------------------------------------------------------------------
# the private upload folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_upload_folder_is_private_and_goes_with_its_owner():
    folder = svc.UploadFolder()
    root = folder.path
    stored = folder.store(b"weights one", "model.safetensors")
    assert stored.parent == root and stored.read_bytes() == b"weights one"
    assert mode(root) == 0o700 and mode(stored) == 0o600
    assert root.name.startswith("seethrough-") and "model" not in stored.name
    del folder
    gc.collect()
    assert not root.exists()


def test_upload_folder_remove_and_pruning():
    folder = svc.UploadFolder()
    paths = [
        folder.store(f"weights {i}".encode(), "w.pt") for i in range(svc.KEEP_UPLOADED_WEIGHTS + 2)
    ]
    kept = list(folder.path.iterdir())
    assert len(kept) == svc.KEEP_UPLOADED_WEIGHTS and paths[-1] in kept
    assert all(mode(p) == 0o600 for p in kept)
    folder.remove()
    assert not folder.path.exists()


def test_store_upload_without_a_folder_uses_a_private_one():
    path = svc.store_upload(b"weights", "w.safetensors")
    assert mode(path.parent) == 0o700 and mode(path) == 0o600
    assert path.parent.name.startswith("seethrough-")
    assert path.parent.name != "seethrough-uploads"  # no shared, predictable folder


def test_sessions_get_separate_folders():
    a, b = svc.UploadFolder(), svc.UploadFolder()
    assert a.path != b.path
    pa, pb = a.store(b"same", "w.pt"), b.store(b"same", "w.pt")
    assert pa.parent == a.path and pb.parent == b.path
    a.remove()
    assert pb.exists()
    b.remove()


# ---------------------------------------------------------------------------------------------
# dashboard page


def _app(monkeypatch, allow: bool):
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    from seethrough.dashboard import APP_PATH

    if allow:
        monkeypatch.setenv(svc.TORCHSCRIPT_ENV, "1")
    else:
        monkeypatch.delenv(svc.TORCHSCRIPT_ENV, raising=False)
    at = AppTest.from_file(str(APP_PATH), default_timeout=180)
    at.run()
    at.radio(key="model_source").set_value("My own file").run()
    assert not at.exception
    return at


@pytest.mark.slow
def test_page_offers_state_dicts_only_by_default(monkeypatch, tmp_path, victim):
    at = _app(monkeypatch, allow=False)
    assert not [r for r in at.sidebar.radio if r.key == "file_kind"]
    (uploader,) = at.sidebar.get("file_uploader")
    assert "nothing in the file runs" in uploader.proto.help and ".ts" not in uploader.proto.help
    assert any("--allow-torchscript" in c.value for c in at.sidebar.caption)
    at.selectbox(key="arch").set_value("resnet18")
    data = script_bytes(Writer(str(victim)))
    for name in ("evil.pt", "evil.ts"):
        at.file_uploader(key="weights_file").set_value((name, data, "application/octet-stream"))
        at.run()
        assert not at.exception
        (message,) = [e.value for e in at.sidebar.error]
        assert f"{name} is a TorchScript file" in message and "--allow-torchscript" in message
        assert not at.dataframe and victim.read_bytes() == SECRET


@pytest.mark.slow
def test_page_with_the_flag_refuses_hostile_torchscript(monkeypatch, tmp_path, victim):
    at = _app(monkeypatch, allow=True)
    at.radio(key="file_kind").set_value("TorchScript").run()
    (uploader,) = at.sidebar.get("file_uploader")
    assert ".ts" in uploader.proto.help and "is a program" in uploader.proto.help
    for build in (Writer, Reader):
        data = script_bytes(build(str(victim)))
        at.file_uploader(key="weights_file").set_value(
            ("evil.ts", data, "application/octet-stream")
        )
        at.run()
        assert not at.exception
        (message,) = [e.value for e in at.sidebar.error]
        assert "aten::from_file" in message and "evil.ts" in message
        assert not at.dataframe and victim.read_bytes() == SECRET
