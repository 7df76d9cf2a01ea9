"""The table of canonical operation kinds: data, in one place.

Step 2 of the pipeline (canonicalize) asks one question of every ``torch.fx``
node: *what operation is this, whatever form it takes?* ``nn.Conv2d``,
``F.conv2d``, ``nnq.Conv2d`` and ``torch.ops.quantized.conv2d`` are all the
kind ``conv2d``; ``x + y``, ``torch.add``, ``Tensor.add`` and
``torch.ops.quantized.add`` are all ``add``. A fused module is a tuple of
kinds (``nniq.ConvReLU2d`` is ``("conv2d", "relu")``), so that a fusion reads
as a one-to-many correspondence rather than a mismatch.

Every node falls in one of four roles:

``op``
    an operation with a canonical kind; it becomes a node of the matched graph.
``pass``
    a node that forwards its first tensor input without changing the numbers
    being compared (observers, fake-quant, ``quantize_per_tensor``,
    ``dequantize``, ``Identity``, eval-mode dropout, ``contiguous``); it is
    collapsed into an edge.
``meta``
    a node that computes shapes or other non-tensor values (``x.size(0)``,
    arithmetic on sizes); it is not an operation and carries no data.
``const``
    a parameter or buffer (``get_attr``).

To teach fxns a new operation, add a line to one of the tables below. Names
not in any table keep their own name as their kind (``permute``,
``transpose``, a user's leaf module class name), which is enough to match them
with their twin on the other side.
"""

from __future__ import annotations

import builtins
import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "FOLDABLE_INTO",
    "MULTI_OUTPUT",
    "UNORDERED_INPUTS",
    "WEIGHTED_KINDS",
    "WEIGHT_ONLY_KINDS",
    "Classification",
    "Role",
    "classify_function",
    "classify_method",
    "classify_module",
    "display_name",
    "element_name",
    "is_tuple_element",
]


class Role(enum.Enum):
    """What a node does to the data flowing through the graph."""

    OP = "op"
    PASS = "pass"
    META = "meta"
    CONST = "const"


@dataclass(frozen=True)
class Classification:
    """The answer for one node: its role and, for ``op``, its kinds."""

    role: Role
    # Canonical kinds of the parts, in data-flow order; empty unless role is OP.
    parts: tuple[str, ...] = ()


PASS = Classification(Role.PASS)
META = Classification(Role.META)


def _op(*parts: str) -> Classification:
    return Classification(Role.OP, parts)


# Kinds whose inputs are matched as a set, not by position. ``cat`` is here
# because the written order of its inputs is not a structural fact worth
# failing a match over; the argument position still breaks ties.
UNORDERED_INPUTS: frozenset[str] = frozenset(
    {"add", "mul", "cat", "maximum", "minimum", "stack"}
)

# Kinds that carry a weight worth comparing in ``compare_weights``.
WEIGHTED_KINDS: frozenset[str] = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
        "embedding",
        "embedding_bag",
        "lstm",
        "gru",
        "rnn",
        "lstm_cell",
        "gru_cell",
        "rnn_cell",
    }
)

# Kinds that PyTorch quantizes weight-only: the quantized op computes a float
# output, so a quantize node after it belongs to its consumer.
WEIGHT_ONLY_KINDS: frozenset[str] = frozenset({"embedding", "embedding_bag"})

# Kinds whose value is a tuple. A ``getitem`` with a constant index on such a
# value selects an element rather than computing anything, so it is collapsed
# into the edge like a pass-through, and the op is compared element by
# element. The names label each element in reports (``rnn[h_n]``): a nested
# tuple mirrors the structure of the value, ``None`` stands for any number of
# tensors, named by their index (``chunk[1]``). Names follow the PyTorch
# documentation of each op's return value.
MULTI_OUTPUT: dict[str, tuple[Any, ...] | None] = {
    "lstm": ("output", ("h_n", "c_n")),
    "gru": ("output", "h_n"),
    "rnn": ("output", "h_n"),
    "lstm_cell": ("h_1", "c_1"),
    "multihead_attention": ("output", "weights"),
    "chunk": None,
    "split": None,
    "split_with_sizes": None,
    "tensor_split": None,
    "unbind": None,
}

# A ``batch_norm`` directly after one of these kinds (and the only user of its
# output) is folded into it by every quantization flow; canonicalization keeps
# the two together as one node on both sides.
FOLDABLE_INTO: frozenset[str] = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
    }
)

# --- modules ---------------------------------------------------------------
# Keyed by class name; consulted only for classes defined inside torch, where
# the same name means the same operation in the float, fused, QAT, reference,
# quantized and dynamic-quantized namespaces.

_MODULE_PARTS: dict[str, tuple[str, ...]] = {
    "Conv1d": ("conv1d",),
    "Conv2d": ("conv2d",),
    "Conv3d": ("conv3d",),
    "ConvTranspose1d": ("conv_transpose1d",),
    "ConvTranspose2d": ("conv_transpose2d",),
    "ConvTranspose3d": ("conv_transpose3d",),
    "ConvReLU1d": ("conv1d", "relu"),
    "ConvReLU2d": ("conv2d", "relu"),
    "ConvReLU3d": ("conv3d", "relu"),
    "ConvBn1d": ("conv1d", "batch_norm"),
    "ConvBn2d": ("conv2d", "batch_norm"),
    "ConvBn3d": ("conv3d", "batch_norm"),
    "ConvBnReLU1d": ("conv1d", "batch_norm", "relu"),
    "ConvBnReLU2d": ("conv2d", "batch_norm", "relu"),
    "ConvBnReLU3d": ("conv3d", "batch_norm", "relu"),
    "ConvAdd2d": ("conv2d", "add"),
    "ConvAddReLU2d": ("conv2d", "add", "relu"),
    "Linear": ("linear",),
    "LinearReLU": ("linear", "relu"),
    "LinearBn1d": ("linear", "batch_norm"),
    "LinearLeakyReLU": ("linear", "leaky_relu"),
    "LinearTanh": ("linear", "tanh"),
    "BatchNorm1d": ("batch_norm",),
    "BatchNorm2d": ("batch_norm",),
    "BatchNorm3d": ("batch_norm",),
    "BNReLU2d": ("batch_norm", "relu"),
    "BNReLU3d": ("batch_norm", "relu"),
    "SyncBatchNorm": ("batch_norm",),
    "LayerNorm": ("layer_norm",),
    "GroupNorm": ("group_norm",),
    "InstanceNorm1d": ("instance_norm",),
    "InstanceNorm2d": ("instance_norm",),
    "InstanceNorm3d": ("instance_norm",),
    "ReLU": ("relu",),
    "ReLU6": ("relu6",),
    "Hardswish": ("hardswish",),
    "Hardsigmoid": ("hardsigmoid",),
    "Hardtanh": ("hardtanh",),
    "Sigmoid": ("sigmoid",),
    "SiLU": ("silu",),
    "Tanh": ("tanh",),
    "GELU": ("gelu",),
    "ELU": ("elu",),
    "LeakyReLU": ("leaky_relu",),
    "PReLU": ("prelu",),
    "Mish": ("mish",),
    "Softmax": ("softmax",),
    "LogSoftmax": ("log_softmax",),
    "AdaptiveAvgPool1d": ("adaptive_avg_pool1d",),
    "AdaptiveAvgPool2d": ("adaptive_avg_pool2d",),
    "AdaptiveAvgPool3d": ("adaptive_avg_pool3d",),
    "AvgPool1d": ("avg_pool1d",),
    "AvgPool2d": ("avg_pool2d",),
    "AvgPool3d": ("avg_pool3d",),
    "MaxPool1d": ("max_pool1d",),
    "MaxPool2d": ("max_pool2d",),
    "MaxPool3d": ("max_pool3d",),
    "Flatten": ("flatten",),
    "Upsample": ("upsample",),
    "Embedding": ("embedding",),
    "EmbeddingBag": ("embedding_bag",),
    "LSTM": ("lstm",),
    "GRU": ("gru",),
    "RNN": ("rnn",),
    "LSTMCell": ("lstm_cell",),
    "GRUCell": ("gru_cell",),
    "RNNCell": ("rnn_cell",),
    "MultiheadAttention": ("multihead_attention",),
}

# Modules that do not change the numbers being compared.
_PASS_MODULES: frozenset[str] = frozenset(
    {
        "Identity",
        "Dropout",
        "Dropout1d",
        "Dropout2d",
        "Dropout3d",
        "AlphaDropout",
        "QuantStub",
        "DeQuantStub",
        "Quantize",
        "DeQuantize",
    }
)

# --- functions and methods -------------------------------------------------
# Keyed by ``__name__`` (functions) or method name, which unifies torch.add,
# Tensor.add, operator.add and the in-place variants.

_NAME_PARTS: dict[str, tuple[str, ...]] = {
    "iadd": ("add",),
    "add_": ("add",),
    "mul_": ("mul",),
    "imul": ("mul",),
    "multiply": ("mul",),
    "sub_": ("sub",),
    "isub": ("sub",),
    "subtract": ("sub",),
    "truediv": ("div",),
    "itruediv": ("div",),
    "true_divide": ("div",),
    "divide": ("div",),
    "concat": ("cat",),
    "concatenate": ("cat",),
    "mm": ("matmul",),
    "bmm": ("matmul",),
    "view": ("reshape",),
    "relu_": ("relu",),
    "batch_norm": ("batch_norm",),
    "sigmoid_": ("sigmoid",),
    "tanh_": ("tanh",),
    "hardtanh_": ("hardtanh",),
    "clamp_": ("clamp",),
    "clip": ("clamp",),
    "interpolate": ("upsample",),
}

# Quantized kernels (``torch.ops.quantized.<name>``) whose name is not already
# a canonical kind.
_QUANTIZED_PARTS: dict[str, tuple[str, ...]] = {
    "add_relu": ("add", "relu"),
    "add_out": ("add",),
    "add_scalar": ("add",),
    "add_scalar_relu": ("add", "relu"),
    "mul_relu": ("mul", "relu"),
    "mul_scalar": ("mul",),
    "mul_scalar_relu": ("mul", "relu"),
    "cat_relu": ("cat", "relu"),
    "conv1d_relu": ("conv1d", "relu"),
    "conv2d_relu": ("conv2d", "relu"),
    "conv3d_relu": ("conv3d", "relu"),
    "conv2d_add": ("conv2d", "add"),
    "conv2d_add_relu": ("conv2d", "add", "relu"),
    "linear_relu": ("linear", "relu"),
    "linear_dynamic": ("linear",),
    "linear_relu_dynamic": ("linear", "relu"),
    "linear_dynamic_fp16": ("linear",),
    "linear_relu_dynamic_fp16": ("linear", "relu"),
    "linear_with_input_q_dq_qweight_dq_output_fp32": ("linear",),
    "batch_norm1d": ("batch_norm",),
    "batch_norm2d": ("batch_norm",),
    "batch_norm3d": ("batch_norm",),
    "batch_norm1d_relu": ("batch_norm", "relu"),
    "batch_norm2d_relu": ("batch_norm", "relu"),
    "batch_norm3d_relu": ("batch_norm", "relu"),
    "embedding_byte": ("embedding",),
    "embedding_4bit": ("embedding",),
    "embedding_bag_byte_rowwise_offsets": ("embedding_bag",),
    "embedding_bag_4bit_rowwise_offsets": ("embedding_bag",),
    "matmul": ("matmul",),
}

# Functions and methods that forward their first tensor argument unchanged
# (for the purpose of comparing numbers).
_PASS_NAMES: frozenset[str] = frozenset(
    {
        "quantize_per_tensor",
        "quantize_per_tensor_dynamic",
        "quantize_per_channel",
        "dequantize",
        "contiguous",
        "detach",
        "clone",
        "to",
        "float",
        "half",
        "bfloat16",
        "double",
        "type_as",
        "dropout",
        "dropout_",
        "alpha_dropout",
        "feature_dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "identity",
    }
)

# Functions and methods whose result is a shape, a dtype or a flag, not data.
_META_NAMES: frozenset[str] = frozenset(
    {
        "size",
        "dim",
        "numel",
        "nelement",
        "len",
        "_assert",
        "is_floating_point",
        "is_contiguous",
        "data_ptr",
        "element_size",
        "stride",
        "q_scale",
        "q_zero_point",
    }
)

# Attributes read with ``getattr(x, name)`` that are metadata, not data.
_META_ATTRS: frozenset[str] = frozenset(
    {"shape", "dtype", "device", "ndim", "is_quantized", "layout", "requires_grad"}
)


def classify_module(module: nn.Module) -> Classification:
    """Classify a ``call_module`` target by its class.

    Example:
        >>> classify_module(torch.nn.Conv2d(3, 8, 3)).parts
        ('conv2d',)
    """
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    if isinstance(module, ObserverBase | FakeQuantizeBase):
        return PASS
    cls = type(module)
    name = cls.__name__
    if cls.__module__.startswith("torch."):
        if name in _PASS_MODULES:
            return PASS
        if name in _MODULE_PARTS:
            return _op(*_MODULE_PARTS[name])
    return _op(name)


def classify_function(
    target: Callable[..., Any], args: tuple[Any, ...]
) -> Classification:
    """Classify a ``call_function`` target.

    ``args`` are the node's arguments; they decide between data and metadata
    for ``getattr`` and for the operators of the ``operator`` module.

    Example:
        >>> import operator
        >>> classify_function(operator.add, ()).parts
        ('add',)
    """
    if isinstance(target, torch._ops.OpOverloadPacket | torch._ops.OpOverload):
        namespace, _, name = _qualified_op_name(target).partition("::")
        name = name.split(".")[0]
        if namespace == "quantized":
            return _op(*_QUANTIZED_PARTS.get(name, (_strip_inplace(name),)))
        return _classify_name(name)

    if target is builtins.getattr:
        if len(args) > 1 and args[1] in _META_ATTRS:
            return META
        return _op("getattr")

    return _classify_name(getattr(target, "__name__", type(target).__name__))


def classify_method(name: str) -> Classification:
    """Classify a ``call_method`` target (a ``Tensor`` method name).

    Example:
        >>> classify_method("view").parts
        ('reshape',)
    """
    return _classify_name(name)


def display_name(target: object) -> str:
    """A short, readable name for a module class, function or method.

    Modules from torch's namespaces carry the alias people write them with
    (``nn.Conv2d``, ``nnq.Conv2d``, ``nniq.ConvReLU2d``); quantized kernels
    read as ``quantized::add``; Python operators as ``operator.add``.

    Example:
        >>> display_name(torch.nn.ReLU)
        'nn.ReLU'
        >>> display_name(torch.ops.quantized.add)
        'quantized::add'
    """
    if isinstance(target, str):
        return f"Tensor.{target}"
    if isinstance(target, torch._ops.OpOverloadPacket | torch._ops.OpOverload):
        return _qualified_op_name(target)
    if isinstance(target, type):
        for prefix, alias in _NAMESPACE_ALIASES:
            if target.__module__.startswith(prefix):
                return f"{alias}.{target.__name__}"
        return target.__name__
    name = getattr(target, "__name__", repr(target))
    module = getattr(target, "__module__", None) or ""
    if module == "_operator" or module == "operator":
        return f"operator.{name}"
    if module.startswith("torch.nn.functional") or module == "torch._C._nn":
        return f"F.{name}"
    if module == "builtins":
        return name
    if module.startswith("torch") or _is_torch_builtin(target):
        return f"torch.{name}"
    return name


def is_tuple_element(kind: str, path: tuple[int, ...]) -> bool:
    """Whether the element at ``path`` of a ``kind`` op's value is a tuple.

    ``path`` is a sequence of indices into the value (``()`` is the value
    itself); a ``getitem`` on a tuple element selects rather than computes.

    Example:
        >>> is_tuple_element("lstm", ()), is_tuple_element("lstm", (1,))
        (True, True)
        >>> is_tuple_element("lstm", (0,)), is_tuple_element("conv2d", ())
        (False, False)
    """
    if kind not in MULTI_OUTPUT:
        return False
    names: Any = MULTI_OUTPUT[kind]
    for index in path:
        if names is None or not isinstance(names, tuple) or index >= len(names):
            return False
        names = names[index]
    return names is None or isinstance(names, tuple)


def element_name(kind: str, path: tuple[int, ...]) -> str:
    """The name of the element at ``path`` of a ``kind`` op's value.

    Example:
        >>> element_name("lstm", (1, 0)), element_name("chunk", (2,))
        ('h_n', '2')
    """
    names: Any = MULTI_OUTPUT.get(kind)
    for depth, index in enumerate(path):
        if isinstance(names, tuple) and index < len(names):
            names = names[index]
        else:
            return ".".join(str(i) for i in path[depth:])
    return str(names) if isinstance(names, str) else ".".join(map(str, path))


# Longest prefix first: the aliases the PyTorch docs use for these namespaces.
_NAMESPACE_ALIASES: tuple[tuple[str, str], ...] = (
    ("torch.ao.nn.intrinsic.quantized.dynamic", "nniqd"),
    ("torch.ao.nn.intrinsic.quantized", "nniq"),
    ("torch.ao.nn.intrinsic.qat", "nniqat"),
    ("torch.ao.nn.intrinsic", "nni"),
    ("torch.ao.nn.quantized.dynamic", "nnqd"),
    ("torch.ao.nn.quantized.reference", "nnqr"),
    ("torch.ao.nn.quantized", "nnq"),
    ("torch.ao.nn.qat", "nnqat"),
    ("torch.ao.quantization", "tq"),
    ("torch.nn", "nn"),
)


def _classify_name(name: str) -> Classification:
    if name in _PASS_NAMES:
        return PASS
    if name in _META_NAMES:
        return META
    if name in _NAME_PARTS:
        return _op(*_NAME_PARTS[name])
    return _op(_strip_inplace(name))


def _strip_inplace(name: str) -> str:
    # ``relu_`` is ``relu``; dunder names such as ``__and__`` are left alone.
    if name.endswith("_") and not name.endswith("__"):
        return name[:-1]
    return name


def _qualified_op_name(op: torch._ops.OpOverloadPacket | torch._ops.OpOverload) -> str:
    if isinstance(op, torch._ops.OpOverload):
        return str(op._schema.name)
    return str(op._qualified_op_name)


def _is_torch_builtin(target: object) -> bool:
    # torch's C functions (torch.flatten, torch.cat) report __module__ None or
    # "torch"; they are attributes of the torch namespace.
    name = getattr(target, "__name__", None)
    return name is not None and getattr(torch, name, None) is target


# Python operators on non-tensor values (sizes) are metadata; on tensors they
# are ops. The graph module decides which by looking at the arguments.
OPERATOR_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.floordiv,
        operator.mod,
        operator.pow,
        operator.neg,
        operator.getitem,
        operator.eq,
        operator.ne,
        operator.lt,
        operator.le,
        operator.gt,
        operator.ge,
        operator.iadd,
        operator.imul,
    }
)
