"""TorchScript files are programs: check one before any of its code runs.

A TorchScript archive holds compiled code next to its weights, and that code may call any
operator torch has, among them ``torch.from_file`` (maps a file into a tensor, readable and
writable) and ``torch.save``. :func:`load_torchscript` therefore

1. reads the file once into memory (what is checked is what is loaded), requires the zip format
   and refuses an archive whose code defines ``__setstate__``: the loader runs that method while
   it unpacks the weights, before anything could be checked;
2. loads it (``torch.jit.load`` compiles the code but runs none of it);
3. walks every method and forward hook of every submodule, with the functions and methods they
   call inlined, and refuses any operator outside :data:`ALLOWED_OPERATORS`: pure tensor
   operators (arithmetic, convolutions, pooling, norms, activations, shape, view and index
   operators, reductions, ...) and the control and structure nodes that do no I/O. Everything
   else is refused, file and process primitives, printing, custom operator namespaces
   (``torch.ops.NAME``), calls that cannot be followed and any operator not listed alike.

Only then does the caller run the module. The list is strict on purpose: a model refused here
can still be used through its weights (``model.state_dict()`` saved as safetensors and loaded
with ``arch=``), which never runs code from the file.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import InvalidParameterError, UnsafeModelError

__all__ = [
    "ALLOWED_OPERATORS",
    "is_torchscript",
    "check_archive",
    "check_module",
    "load_torchscript",
]

# Element-wise arithmetic, comparisons and activations.
_POINTWISE = """
abs absolute acos acosh add addcdiv addcmul asin asinh atan atan2 atanh bitwise_and bitwise_not
bitwise_or bitwise_xor ceil celu clamp clamp_max clamp_min clip copysign cos cosh deg2rad div
divide elu eq erf erfc erfinv exp exp2 expm1 fill fix float_power floor floor_divide fmax fmin
fmod frac ge gelu glu gt hardshrink hardsigmoid hardswish hardtanh hypot le leaky_relu lerp lgamma
log log10 log1p log2 log_sigmoid logaddexp logical_and logical_not logical_or logical_xor logit lt
masked_fill masked_scatter maximum minimum mish mul multiply nan_to_num ne neg negative pow prelu
rad2deg reciprocal relu relu6 remainder round rrelu rsqrt rsub selu sgn sigmoid sign silu sin sinc
sinh softplus softshrink softsign sqrt square sub subtract tan tanh tanhshrink threshold true_divide
trunc where xlogy zero
"""

# Tensor creation, layout, shape, indexing, reductions and the network layers themselves. Each
# operator of these two lists is also allowed in place (``relu_``, ``dropout_``).
_TENSOR = """
_convolution _native_multi_head_attention _pad_circular _pad_enum _shape_as_tensor _softmax
_reshape_from_tensor _upsample_bicubic2d_aa _upsample_bilinear2d_aa _upsample_nearest_exact1d
_upsample_nearest_exact2d _upsample_nearest_exact3d adaptive_avg_pool1d adaptive_avg_pool2d
adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d addbmm addmm addmv
all allclose alpha_dropout amax amin aminmax any arange argmax argmin argsort as_tensor avg_pool1d
avg_pool2d avg_pool3d baddbmm batch_norm bernoulli bilinear bmm broadcast_tensors broadcast_to
bucketize cartesian_prod cat cdist channel_shuffle chunk clone col2im concat concatenate
constant_pad_nd contiguous conv1d conv2d conv3d conv_tbc conv_transpose1d conv_transpose2d
conv_transpose3d convolution copy_ cosine_similarity count_nonzero cpu cross cummax cummin cumprod
cumsum detach diag diag_embed diagonal diff dim dist dot dropout einsum embedding empty empty_like
expand expand_as eye feature_alpha_dropout feature_dropout flatten flip fliplr flipud frobenius_norm
full full_like gather grid_sampler group_norm gru_cell hstack im2col index index_add index_copy
index_fill index_put index_put_ index_select instance_norm is_contiguous is_floating_point isclose
isfinite isinf isnan item kron kthvalue layer_norm linalg_norm linalg_vector_norm linear linspace
log_softmax logsumexp lstm_cell masked_select matmul max max_pool1d max_pool1d_with_indices
max_pool2d max_pool2d_with_indices max_pool3d max_pool3d_with_indices mean median meshgrid min mm
movedim moveaxis msort mv nanmean nansum narrow native_batch_norm native_channel_shuffle
native_layer_norm new_empty new_full new_ones new_zeros nonzero norm normal numel one_hot ones
ones_like outer pad pairwise_distance permute pixel_shuffle pixel_unshuffle prod quantile rand
rand_like randint randn randn_like reflection_pad1d reflection_pad2d reflection_pad3d renorm
repeat repeat_interleave replication_pad1d replication_pad2d replication_pad3d requires_grad_
reshape reshape_as rnn_relu_cell rnn_tanh_cell roll rot90 scalar_tensor scaled_dot_product_attention
scatter scatter_add scatter_reduce searchsorted select size slice softmax sort split
split_with_sizes squeeze stack std std_mean stride sum swapaxes swapdims t take take_along_dim
tensor tensor_split tile to topk trace transpose tril triu type_as unbind unflatten unfold
uniform unique_consecutive unsqueeze upsample_bicubic2d upsample_bilinear2d upsample_linear1d
upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_trilinear3d var var_mean vdot
view view_as vstack zeros zeros_like
"""

# TorchScript's own scalar, list, dict and string operations (``x.size(0) // 2``, ``len(xs)``).
_LANGUAGE = """
Bool ComplexImplicit Float FloatImplicit Int IntImplicit ScalarImplicit __and__ __contains__
__derive_index __getitem__ __iand__ __interpolate __ior__ __is__ __isnot__ __ixor__ __lshift__ __not__
__or__ __range_length __round_to_zero_floordiv __rshift__ __upsample __upsample_bilinear __xor__
_set_item append bool clear copy count dict divmod extend float floordiv format get index insert int
is_autocast_enabled is_grad_enabled items join keys len list lower pop remove reverse sorted startswith str
strip upper values warn
"""

_PRIM = """
Constant DictConstruct DictIndex GetAttr If ListConstruct ListUnpack Loop NumToTensor Param
RaiseException Return SetAttr TupleConstruct TupleIndex TupleSlice TupleUnpack Uninitialized
CreateObject EnumName EnumValue StringIndex abs data device dtype grad is_cuda is_meta is_mps
is_nested is_quantized is_sparse is_xpu isinstance layout max min requires_grad shape
tolist type
unchecked_cast unchecked_unwrap_optional
"""

_ATEN = set(_LANGUAGE.split())
_ATEN |= {name + end for name in (_POINTWISE + _TENSOR).split() for end in ("", "_")}
ALLOWED_OPERATORS: frozenset[str] = frozenset(
    {f"aten::{name}" for name in _ATEN} | {f"prim::{name}" for name in _PRIM.split()}
)
"""Node kinds a TorchScript graph may hold: pure tensor operators, TorchScript's scalar, list and
string operations, and control and structure nodes. Not listed, so refused among others:
``aten::from_file``, ``aten::save``, ``prim::Print`` (a model has nothing to print),
``prim::Enter`` / ``prim::Exit`` (they call methods no graph shows), ``prim::fork``,
``aten::as_strided`` / ``aten::set_`` / ``aten::data_ptr`` (raw storage and addresses), and
every custom namespace (``torchvision::``, ``quantized::``, ``torch.ops.NAME``)."""

_CALLS = ("prim::CallFunction", "prim::CallMethod")
_SAFE_INSTEAD = (
    "A TorchScript file is a program, and only files whose code does nothing but tensor "
    "computations are loaded. To use the weights safely, save model.state_dict() (as "
    ".safetensors) and load that file with its architecture (arch=NAME, --arch NAME)."
)
# Records never read as code, not scanned for __setstate__: tensor bytes, and the debug records
# beside each code file (source text for error messages, comments included).
_NOT_CODE = re.compile(r"^(?:\.data/)?(?:data|constants)/\d+$|\.debug_pkl$")
_SETSTATE = b"__setstate__"
_ZIP_MAGIC = b"PK\x03\x04"
_FLATBUFFER_MAGIC = b"PTMF"  # at offset 4: torch.jit.load would read the file as a flatbuffer


def is_torchscript(data: bytes | str | Path) -> bool:
    """Whether ``data`` (bytes or a file path) is a TorchScript zip archive.

    True when it is a zip holding a ``constants.pkl`` record, which TorchScript writes and a
    ``torch.save`` state dict does not. Nothing in it is run.
    """
    import zipfile

    source = io.BytesIO(data) if isinstance(data, bytes) else Path(data)
    try:
        if not zipfile.is_zipfile(source):
            return False
        with zipfile.ZipFile(source) as archive:
            return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def _records(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every record of the archive, read with the reader ``torch.jit.load`` itself uses."""
    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    for name in reader.get_all_records():
        if not _NOT_CODE.search(name):
            yield name, bytes(reader.get_record(name))


def check_archive(data: bytes, what: str) -> None:
    """Refuse, before loading, a TorchScript archive that would run code while it is loaded.

    Args:
        data: the file's bytes.
        what: how messages name the file.

    Raises:
        InvalidParameterError: not a zip archive torch can read.
        UnsafeModelError: the file would be read as a flatbuffer, holds a legacy ``model.json``
            module, or its code defines ``__setstate__``.
    """
    if data[:4] != _ZIP_MAGIC:
        raise InvalidParameterError(f"'{what}' is not a TorchScript zip archive")
    if data[4:8] == _FLATBUFFER_MAGIC:
        raise UnsafeModelError(
            f"refusing TorchScript file '{what}': torch would read it as a flatbuffer module, "
            f"not as the zip archive that was checked. {_SAFE_INSTEAD}"
        )
    try:
        records = list(_records(data))
    except Exception as exc:
        raise InvalidParameterError(
            f"cannot read TorchScript file '{what}': {_first_line(exc)}"
        ) from None
    for name, content in records:
        if name.rsplit("/", 1)[-1] == "model.json":
            raise UnsafeModelError(
                f"refusing TorchScript file '{what}': it is in the legacy format (model.json), "
                f"which is not checked. {_SAFE_INSTEAD}"
            )
        if _SETSTATE in content:
            raise UnsafeModelError(
                f"refusing TorchScript file '{what}': its code defines __setstate__ ({name}), "
                "which TorchScript runs while it loads the file, before the code could be "
                f"checked. {_SAFE_INSTEAD}"
            )


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message (its type name if empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_Function = tuple[tuple[str, str] | None, str, torch._C.Graph]


def _functions(module: torch.jit.ScriptModule) -> Iterator[_Function]:
    """(key, name, graph) of every method and forward hook of every submodule, each type once.

    A method's key is (its module type, its name), as a ``prim::CallMethod`` names it; hooks,
    called as functions, have none.
    """
    seen: set[tuple[str, str]] = set()
    for path, sub in module.named_modules():
        c = sub._c
        type_name = c._type().qualified_name()
        prefix = f"{path}." if path else ""
        for method in c._method_names():
            if (type_name, method) not in seen:
                seen.add((type_name, method))
                yield (type_name, method), f"{prefix}{method}", c._get_method(method).graph
        hooks = [("forward pre-hook", h) for h in c._get_forward_pre_hooks()]
        hooks += [("forward hook", h) for h in c._get_forward_hooks()]
        for kind, hook in hooks:
            if (type_name, f"{kind} {hook.name}") not in seen:
                seen.add((type_name, f"{kind} {hook.name}"))
                yield None, f"{prefix}{hook.name} ({kind})", hook.graph


def _callee(node: torch._C.Node) -> tuple[str, str] | None:
    """(type, method) a ``prim::CallMethod`` node calls, if its receiver is a class type."""
    receiver = next(node.inputs()).type()
    if not isinstance(receiver, torch._C.ClassType):
        return None
    return receiver.qualified_name(), node.s("name")


def _first_refused(block: torch._C.Block, called: set[tuple[str, str]] | None) -> str | None:
    """The kind of the first node under ``block`` (nested blocks included) that is not allowed.

    With ``called``, calls are skipped (their targets are checked on their own) and the
    methods they call are added to it; without, any call left is refused.
    """
    for node in block.nodes():
        kind = node.kind()
        if kind in _CALLS and called is not None:
            callee = _callee(node) if kind == "prim::CallMethod" else None
            if callee is not None:
                called.add(callee)
            continue
        if kind not in ALLOWED_OPERATORS:
            if kind == "prim::CallMethod":
                return f"{kind} {node.s('name')} (a call that cannot be followed)"
            return kind
        for inner in node.blocks():
            found = _first_refused(inner, called)
            if found is not None:
                return found
    return None


def check_module(module: torch.jit.ScriptModule, what: str) -> None:
    """Refuse a loaded TorchScript module whose code uses an operator outside the allow-list.

    Every method (``forward``, exported ones, ``__getstate__``, ...) and forward hook of every
    submodule is inspected as written, so that the error names the method where the operator
    is used; then each one that no other method calls is inspected again with the functions and
    methods it calls inlined, which covers the free functions the first pass cannot see (and
    every called method again). Nothing is run.

    Raises:
        UnsafeModelError: names the first refused operator and the method using it.
    """
    if not isinstance(module, torch.jit.ScriptModule):
        raise UnsafeModelError(f"refusing TorchScript file '{what}': it holds no module")
    try:
        functions = list(_functions(module))
        called: set[tuple[str, str]] = set()
        for _, name, graph in functions:
            found = _first_refused(graph.block(), called)
            if found is not None:
                _refuse(what, found, f"method '{name}'")
        for key, name, graph in functions:
            if key in called:  # inlined into its caller's graph below
                continue
            inlined = graph.copy()
            torch._C._jit_pass_inline(inlined)
            found = _first_refused(inlined.block(), None)
            if found is not None:
                _refuse(what, found, f"method '{name}' (in a function or method it calls)")
    except UnsafeModelError:
        raise
    except Exception as exc:
        raise UnsafeModelError(
            f"refusing TorchScript file '{what}': its code could not be inspected "
            f"({_first_line(exc)}). {_SAFE_INSTEAD}"
        ) from None


def _refuse(what: str, operator: str, where: str) -> None:
    raise UnsafeModelError(
        f"refusing TorchScript file '{what}': {where} uses {operator}, which is not a pure "
        f"tensor operator. {_SAFE_INSTEAD}"
    )


def load_torchscript(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> torch.jit.ScriptModule:
    """Load a TorchScript file after checking that its code does nothing but tensor operations.

    The file is read once; :func:`check_archive` checks those bytes, ``torch.jit.load`` loads
    them, and :func:`check_module` inspects the module before it is returned. No code from the
    file runs before the checks pass (the caller runs it afterwards).

    Raises:
        InvalidParameterError: the file cannot be read or is not a TorchScript archive.
        UnsafeModelError: the code uses anything but allowed operators (see
            :data:`ALLOWED_OPERATORS`) or would run while loading.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidParameterError(f"cannot read '{path}': {exc.strerror or exc}") from None
    check_archive(data, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        try:
            module = torch.jit.load(io.BytesIO(data), map_location=map_location)
        except Exception as exc:
            raise InvalidParameterError(
                f"cannot load TorchScript file '{path}': {_first_line(exc)}"
            ) from None
    check_module(module, str(path))
    return module
