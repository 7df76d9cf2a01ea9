"""Drop-in versions of PyTorch's eager numeric suite, built on fxns.

Code written against ``torch.ao.ns._numeric_suite`` switches by changing one
import::

    import fxns.compat as ns  # was: import torch.ao.ns._numeric_suite as ns

    wt = ns.compare_weights(float_model.state_dict(), qmodel.state_dict())
    act = ns.compare_model_outputs(float_model, qmodel, data)
    stub = ns.compare_model_stub(float_model, qmodel, {nn.Conv2d}, data)

The functions and classes have the names, arguments and return shapes of the
eager suite: dicts keyed by layer name, each entry a dict with a ``'float'``
and a ``'quantized'`` entry holding tensors (or lists of tensors, one per
forward pass). The comparisons are fxns's own:

- Layers are paired by :func:`fxns.match`, not by module name and type, so an
  unfused float model pairs with a fused quantized one (float ``conv``,
  ``bn``, ``relu`` with ``ConvReLU2d``), and a fused float module is found by
  the type of its parts.
- Every value is logged whole: the whole batch, not its first sample.
- Shadows pass ``None`` and other non-tensor arguments through as they are.
- Each call of a module or ``FloatFunctional`` used several times in one
  forward pass is an entry of its own (``ff``, ``ff:1``, ...).
- :func:`compare_model_outputs` and :func:`compare_model_stub` work on copies
  of the models: the caller's models are unchanged, and each call returns the
  values of that call only. :func:`prepare_model_outputs` and
  :func:`prepare_model_with_stubs` modify the models they are given, as their
  names promise.
- :func:`compare_weights` reads a dynamic-quantized LSTM's packed weights as
  one entry per float weight (``rnn.weight_ih_l1_reverse``), and folds a batch
  norm into the float weight where quantization folded it.

``docs/migrating-from-torch-ao-ns.md`` lists each function next to its eager
twin and says what changes in the numbers and why.

The results are plain dicts rather than fxns's typed results because code
written for the eager suite indexes them that way; :func:`fxns.compare_weights`
and :func:`fxns.compare_activations` give the typed :class:`fxns.Report`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from .compare import _eval_model, _own_copy, _warn
from .errors import ArgumentError, ModelError
from .graph import OpGraph
from .instrument import shadow_input
from .match import Matching, Pair, match
from .ops import Role
from .quantize import quiet_torch_ao
from .trace import CALL_SITE, LeafTracer
from .weights import fold_batch_norm

__all__ = [
    "Logger",
    "OutputLogger",
    "Shadow",
    "ShadowLogger",
    "compare_model_outputs",
    "compare_model_stub",
    "compare_weights",
    "get_logger_dict",
    "get_matching_activations",
    "prepare_model_outputs",
    "prepare_model_with_stubs",
]

logger = logging.getLogger(__name__)

# The entry of a logger's stats in the dicts the functions return.
STATS = "stats"
FLOAT = "float"
QUANTIZED = "quantized"
TENSOR_VAL = "tensor_val"


# --- loggers --------------------------------------------------------------------------


class Logger(nn.Module):
    """Base class of the loggers: what a logger records goes into ``stats``.

    Subclass it for a custom logger and pass the class as ``logger_cls``.

    Example:
        >>> class Shapes(Logger):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.stats["shape"] = []
        ...     def forward(self, x):
        ...         self.stats["shape"].append(tuple(x.shape))
        ...         return x
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, Any] = {}
        # Read by torch's FX-mode quantization when a logger stands in for an
        # observer; kept for code that relies on it.
        self.dtype = torch.quint8

    def forward(self, x: Any) -> Any:
        return None


class ShadowLogger(Logger):
    """Records, for each call of a :class:`Shadow`, the quantized module's
    output and its float shadow's output.

    Each value is recorded whole (every sample of the batch) as a detached
    copy. For a module that returns a tuple (an LSTM's ``(output, (h_n,
    c_n))``) the first element, the output, is recorded.

    Example:
        >>> log = ShadowLogger()
        >>> log(torch.ones(4, 2), torch.zeros(4, 2))
        >>> log.stats["quantized"][0].shape
        torch.Size([4, 2])
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats[FLOAT] = []
        self.stats[QUANTIZED] = []

    def forward(self, x: Any, y: Any) -> None:  # type: ignore[override]
        """``x``: the quantized module's output; ``y``: the float shadow's."""
        self.stats[QUANTIZED].append(_kept(_first_element(x)))
        self.stats[FLOAT].append(_kept(_first_element(y)))


class OutputLogger(Logger):
    """Records a module's output at every call, as a detached copy.

    A tuple output (an LSTM's) is recorded as the tuple.

    Example:
        >>> log = OutputLogger()
        >>> _ = log(torch.ones(3))
        >>> log.stats["tensor_val"]
        [tensor([1., 1., 1.])]
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats[TENSOR_VAL] = []

    def forward(self, x: Any) -> Any:
        self.stats[TENSOR_VAL].append(_kept(x))
        return x


def _kept(value: Any) -> Any:
    """A detached copy: later in-place ops of the model must not change it."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple | list):
        return type(value)(_kept(v) for v in value)
    return value


def _first_element(value: Any) -> Any:
    while isinstance(value, tuple | list) and value:
        value = value[0]
    return value


# The attribute that names the entry of a logger fxns attached (it travels
# with copies of the model); other loggers are named after the module that
# holds them.
ENTRY_ATTR = "fxns_entry"


def _name_entry(logger_module: nn.Module, entry: str) -> None:
    setattr(logger_module, ENTRY_ATTR, entry)


def _entry_of(module: nn.Module) -> str | None:
    entry = module.__dict__.get(ENTRY_ATTR)
    return entry if isinstance(entry, str) else None


# --- shadow ---------------------------------------------------------------------------


class Shadow(nn.Module):
    """A quantized module with its float twin run next to it on the same input.

    The quantized module runs on its inputs as given; the float module runs on
    copies of them, dequantized (``None``, numbers and other non-tensor
    arguments pass as they are). Both outputs go to the logger; the quantized
    output is returned, so the model computes what it computed before.

    The methods of ``FloatFunctional`` (:meth:`add`, :meth:`add_scalar`,
    :meth:`mul`, :meth:`mul_scalar`, :meth:`cat`, :meth:`add_relu`,
    :meth:`matmul`) are shadowed the same way, for a ``QFunctional`` with its
    ``FloatFunctional`` as ``float_module``.

    Args:
        q_module: the quantized module.
        float_module: the float module (or float computation) it replaces.
        logger_cls: the logger class; called with no arguments, then with
            (quantized output, float output) at every call.

    Example:
        >>> shadow = Shadow(qmodel.fc, float_model.fc, ShadowLogger)  # doctest: +SKIP
        >>> qmodel.fc = shadow  # doctest: +SKIP
        >>> qmodel(x)  # doctest: +SKIP
        >>> shadow.logger.stats["float"][0].shape  # doctest: +SKIP
    """

    def __init__(
        self,
        q_module: nn.Module,
        float_module: nn.Module,
        logger_cls: Callable[[], Any],
    ) -> None:
        super().__init__()
        self.orig_module = q_module
        self.shadow_module = float_module
        # Unused; kept so that code walking a Shadow finds what it expects.
        self.dequant = _dequantize_module()
        self.logger = _new_logger(logger_cls)
        # For a module called several times per forward pass: the logger of
        # each call, by call index (None: that call is not logged). ``None``
        # logs every call to ``self.logger``.
        self._call_loggers: list[nn.Module | None] | None = None
        self._calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # The float inputs are copied before the quantized module runs, so an
        # in-place op inside it cannot reach them.
        float_args = shadow_input(args)
        float_kwargs = {k: shadow_input(v) for k, v in kwargs.items()}
        output = self.orig_module(*args, **kwargs)
        shadow_output = self.shadow_module(*float_args, **float_kwargs)
        self._log(output, shadow_output)
        return output

    def add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._shadowed("add", x, y)

    def add_scalar(self, x: torch.Tensor, y: float) -> torch.Tensor:
        return self._shadowed("add_scalar", x, y)

    def mul(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._shadowed("mul", x, y)

    def mul_scalar(self, x: torch.Tensor, y: float) -> torch.Tensor:
        return self._shadowed("mul_scalar", x, y)

    def cat(self, x: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
        return self._shadowed("cat", list(x), dim)

    def add_relu(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._shadowed("add_relu", x, y)

    def matmul(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._shadowed("matmul", x, y)

    def _shadowed(self, method: str, *args: Any) -> Any:
        """``method`` of the quantized module, and of the float one on copies
        of the arguments, dequantized."""
        float_args = shadow_input(args)
        output = getattr(self.orig_module, method)(*args)
        self._log(output, getattr(self.shadow_module, method)(*float_args))
        return output

    def _log(self, output: Any, shadow_output: Any) -> None:
        if self._call_loggers is None:
            self.logger(output, shadow_output)
            return
        index = self._calls
        self._calls += 1
        if index < len(self._call_loggers):
            call_logger = self._call_loggers[index]
            if call_logger is not None:
                call_logger(output, shadow_output)

    def _log_calls(
        self, entries: list[str | None], logger_cls: Callable[[], Any]
    ) -> None:
        """Log the k-th call of each forward pass as ``entries[k]``."""
        loggers: list[nn.Module | None] = []
        for index, entry in enumerate(entries):
            if entry is None:
                loggers.append(None)
                continue
            # The first logged call keeps ``self.logger``; later ones get
            # their own, registered as children so that get_logger_dict
            # finds them.
            if all(other is None for other in loggers):
                call_logger = self.logger
            else:
                call_logger = _new_logger(logger_cls)
                self.add_module(f"logger_{index}", call_logger)
            _name_entry(call_logger, entry)
            loggers.append(call_logger)
        self._call_loggers = loggers

    def _reset_calls(self) -> None:
        self._calls = 0


# --- weights --------------------------------------------------------------------------


def compare_weights(
    float_dict: Mapping[str, Any], quantized_dict: Mapping[str, Any]
) -> dict[str, dict[str, torch.Tensor]]:
    """Pair each weight of a quantized model's state dict with its float weight.

    Only the keys and values of the two state dicts are known, so the pairing
    follows the names that eager quantization keeps (``conv.weight`` ↔
    ``conv.weight``, ``fc._packed_params._packed_params`` ↔ ``fc.weight``, a
    fused float model's ``conv.0.weight``), and what the keys say about the
    structure:

    - A dynamic-quantized recurrent layer's ``_all_weight_values.<i>.param``
      holds the input-hidden and hidden-hidden weights of one layer and
      direction, in the order layer 0, layer 0 reverse, layer 1, ...; each
      becomes its own entry, keyed by the float weight's name
      (``rnn.weight_ih_l1_reverse``). Cells (``_packed_weight_ih``) the same.
    - A batch norm whose entries are gone from the quantized state dict was
      folded into the weight registered just before it (its conv or linear,
      when the output channels agree); the float weight is folded the same
      way, ``w · γ / √(σ² + ε)``, before pairing. ``ε`` is not in a state
      dict: the default 1e-5 is used. A batch norm registered elsewhere in
      the model is not found this way; :func:`fxns.compare_weights` reads
      the model's structure and has no such limit.

    Args:
        float_dict: ``float_model.state_dict()``.
        quantized_dict: ``quantized_model.state_dict()``.

    Returns:
        ``{key: {"float": tensor, "quantized": tensor}}`` in the order of the
        quantized state dict, keyed by the quantized state dict's key (by the
        float weight's name for recurrent layers). ``"quantized"`` is the
        quantized tensor (``.dequantize()`` it to compare); ``"float"`` is
        the float state dict's tensor, or a new tensor where a batch norm was
        folded in.

    Raises:
        ArgumentError: an argument is not a state dict.

    Example:
        >>> wt = compare_weights(
        ...     float_model.state_dict(), qmodel.state_dict()
        ... )  # doctest: +SKIP
        >>> for key, pair in wt.items():  # doctest: +SKIP
        ...     print(key, pair["float"].shape, pair["quantized"].dequantize().shape)
    """
    _check_state_dict(float_dict, "float_dict")
    _check_state_dict(quantized_dict, "quantized_dict")
    folds = _folded_batch_norms(float_dict, quantized_dict)
    result: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in quantized_dict.items():
        for entry, float_key, quantized in _weights_of(key, value, float_dict):
            float_weight = float_dict[float_key]
            bn = folds.get(float_key)
            if bn is not None:
                float_weight = _fold(float_weight, float_dict, bn)
            result[entry] = {FLOAT: float_weight, QUANTIZED: quantized}
    logger.info("compare_weights: %d weights paired", len(result))
    return result


def _check_state_dict(value: object, role: str) -> None:
    if isinstance(value, nn.Module):
        raise ArgumentError(
            f"{role} is a model ({type(value).__name__}); pass its state_dict(), "
            "or call fxns.compare_weights(float_model, quantized_model) to pair "
            "weights by the models' structure"
        )
    if not isinstance(value, Mapping):
        raise ArgumentError(
            f"{role} must be a state dict (model.state_dict()), got "
            f"{type(value).__name__}"
        )


# A dynamic-quantized RNN's packed weights of one layer and direction.
_RNN_PACKED = re.compile(r"^(?:(.*)\.)?_all_weight_values\.(\d+)\.param$")
# A dynamic-quantized RNN cell's packed input-hidden or hidden-hidden weight.
_CELL_PACKED = re.compile(r"^(?:(.*)\.)?_packed_weight_(ih|hh)$")
_LINEAR_PACKED = "._packed_params._packed_params"
_EMBEDDING_PACKED = "._packed_params._packed_weight"


def _weights_of(
    key: str, value: Any, float_dict: Mapping[str, Any]
) -> Iterable[tuple[str, str, torch.Tensor]]:
    """(entry key, float key, quantized weight) for each weight in one entry
    of the quantized state dict."""
    if key.endswith(_LINEAR_PACKED) and isinstance(value, tuple | list) and value:
        float_key = _float_weight_key(float_dict, key[: -len(_LINEAR_PACKED)])
        if float_key is not None and isinstance(value[0], torch.Tensor):
            yield key, float_key, value[0]
        return
    if key.endswith(_EMBEDDING_PACKED) and isinstance(value, torch.Tensor):
        float_key = _float_weight_key(float_dict, key[: -len(_EMBEDDING_PACKED)])
        if float_key is not None:
            yield key, float_key, value
        return
    rnn = _RNN_PACKED.match(key)
    if rnn is not None:
        yield from _rnn_weights(
            rnn.group(1) or "", int(rnn.group(2)), value, float_dict
        )
        return
    cell = _CELL_PACKED.match(key)
    if cell is not None:
        float_key = _join(cell.group(1) or "", f"weight_{cell.group(2)}")
        if float_key in float_dict:
            yield float_key, float_key, _unpack_linear(value)
        return
    module, _, attr = key.rpartition(".")
    if attr == "weight" and isinstance(value, torch.Tensor):
        float_key = _float_weight_key(float_dict, module)
        if float_key is not None:
            yield key, float_key, value


def _float_weight_key(float_dict: Mapping[str, Any], module: str) -> str | None:
    """The float weight of the quantized module at ``module``: its own, or
    that of the first part of a fused float module (``conv.0.weight``)."""
    for candidate in (_join(module, "weight"), _join(module, "0.weight")):
        if isinstance(float_dict.get(candidate), torch.Tensor):
            return candidate
    return None


def _rnn_weights(
    module: str, index: int, packed: Any, float_dict: Mapping[str, Any]
) -> Iterable[tuple[str, str, torch.Tensor]]:
    """The two weights of packed entry ``index`` of a dynamic-quantized RNN.

    The entries run over layers, and within a layer over directions; the
    float state dict says whether the layer is bidirectional.
    """
    directions = 2 if _join(module, "weight_ih_l0_reverse") in float_dict else 1
    layer, direction = divmod(index, directions)
    suffix = "_reverse" if direction else ""
    names = [_join(module, f"weight_{g}_l{layer}{suffix}") for g in ("ih", "hh")]
    if not all(name in float_dict for name in names):
        return
    try:
        # The cell's serialized form: (kind, tensors, doubles, longs,
        # (packed input-hidden, packed hidden-hidden)).
        packed_ih, packed_hh = packed.__getstate__()[0][4]
    except (AttributeError, IndexError, TypeError, ValueError):
        logger.debug("compare_weights: cannot unpack %s; skipped", module)
        return
    for name, weight in zip(names, (packed_ih, packed_hh), strict=True):
        yield name, name, _unpack_linear(weight)


def _unpack_linear(packed: Any) -> torch.Tensor:
    """The weight in packed linear parameters (int8 or float16)."""
    weight = torch.ops.quantized.linear_unpack(packed)[0]
    assert isinstance(weight, torch.Tensor)
    return weight


def _folded_batch_norms(
    float_dict: Mapping[str, Any], quantized_dict: Mapping[str, Any]
) -> dict[str, str]:
    """Float weight key → the batch norm (module prefix) folded into it.

    A float batch norm has ``running_mean`` and ``running_var``; it was folded
    when the quantized state dict has no entry of it and the module
    registered just before it has a weight whose output channels match.
    """
    modules = list(dict.fromkeys(k.rpartition(".")[0] for k in float_dict))
    quantized_modules = {k.rpartition(".")[0] for k in quantized_dict}
    folds = {}
    for before, module in itertools.pairwise(modules):
        mean = float_dict.get(_join(module, "running_mean"))
        var = float_dict.get(_join(module, "running_var"))
        weight = float_dict.get(_join(before, "weight"))
        if (
            isinstance(mean, torch.Tensor)
            and isinstance(var, torch.Tensor)
            and isinstance(weight, torch.Tensor)
            and module not in quantized_modules
            and weight.dim() >= 2
            and weight.shape[0] == mean.numel()
        ):
            folds[_join(before, "weight")] = module
    return folds


# ``eps`` of torch's batch norms unless set otherwise; a state dict lacks it.
_BN_EPS = 1e-5


def _fold(weight: torch.Tensor, float_dict: Mapping[str, Any], bn: str) -> torch.Tensor:
    gamma = float_dict.get(_join(bn, "weight"))
    var = float_dict[_join(bn, "running_var")]
    norm = nn.BatchNorm1d(var.numel(), eps=_BN_EPS, affine=gamma is not None)
    assert norm.running_var is not None
    with torch.no_grad():
        norm.running_var.copy_(var)
        if gamma is not None:
            assert norm.weight is not None
            norm.weight.copy_(gamma)
        return fold_batch_norm(weight.detach(), norm)


# --- outputs --------------------------------------------------------------------------


def compare_model_outputs(
    float_model: nn.Module,
    q_model: nn.Module,
    *data: Any,
    logger_cls: Callable[[], Any] = OutputLogger,
    allow_list: Iterable[type[nn.Module]] | None = None,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> dict[str, dict[str, list[Any]]]:
    """Run both models on ``data`` and return the outputs of every matched layer.

    Works on copies: ``float_model`` and ``q_model`` are not changed, and
    each call returns the values of its own ``data`` only. The layers are
    those of :func:`prepare_model_outputs`.

    Args:
        float_model: the float model.
        q_model: the quantized model.
        data: the positional arguments of one forward pass of both models.
        logger_cls: the logger class (:class:`OutputLogger` records every
            output; a custom one must keep the ``"tensor_val"`` list).
        allow_list: module types whose layers are logged; default: the
            modules eager quantization knows (torch's
            ``get_default_compare_output_module_list()``).
        leaf_modules: module classes to keep as single operations when
            tracing (for code ``torch.fx`` cannot trace).
        leaf_module_names: submodule names to keep as single operations.

    Returns:
        ``{"<layer>.stats": {"float": [output], "quantized": [output]}}``, in
        module order. ``<layer>`` is the float layer's name: its module path,
        ``:<k>`` added for the k-th call of a module called several times.
        Outputs are whole batches (tuples for LSTMs, as the modules return
        them); quantized ones are quantized tensors, except where the
        quantized layer computes in float (dynamic quantization) or its
        unobserved output is read at the ``DeQuantize`` it feeds (a
        ``mul_scalar`` just before the ``DeQuantStub``): then dequantized.

    Raises:
        ModelError: a model is not an ``nn.Module`` or cannot be copied.
        TraceError: a model cannot be traced (the message names the module to
            pass in ``leaf_module_names``).

    Example:
        >>> act = compare_model_outputs(float_model, qmodel, x)  # doctest: +SKIP
        >>> for key, pair in act.items():  # doctest: +SKIP
        ...     print(key, compute_sqnr(pair["float"][0], pair["quantized"][0]))
    """
    float_copy = _copy_for_run(float_model, "float model")
    q_copy = _copy_for_run(q_model, "quantized model")
    prepare_model_outputs(
        float_copy,
        q_copy,
        logger_cls,
        allow_list,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    with torch.no_grad():
        float_copy(*data)
        q_copy(*data)
    return get_matching_activations(float_copy, q_copy)


def prepare_model_outputs(
    float_module: nn.Module,
    q_module: nn.Module,
    logger_cls: Callable[[], Any] = OutputLogger,
    allow_list: Iterable[type[nn.Module]] | None = None,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> None:
    """Attach a logger to each matched layer of both models, in place.

    The layers are paired by :func:`fxns.match`; a pair is logged when one of
    its modules (on either side) has a type in ``allow_list``. Each side's
    logger records the pair's output: the float ``relu`` of a float ``conv,
    bn, relu`` and the quantized ``ConvReLU2d`` are one pair. Each call of a
    module or ``FloatFunctional`` used several times per forward pass has its
    own logger. A ``QuantStub`` and the ``Quantize`` it became are a pair too
    (the input quantization error).

    The loggers are child modules of the modules whose output they record,
    fed by forward hooks (the module's output is unchanged); both models are
    modified. Run both on the same inputs, then call
    :func:`get_matching_activations`. To leave the models as they are, use
    :func:`compare_model_outputs`.

    Args:
        float_module: the float model.
        q_module: the quantized model.
        logger_cls: the logger class, called with no arguments, then with
            each output.
        allow_list: as for :func:`compare_model_outputs`.
        leaf_modules: as for :func:`compare_model_outputs`.
        leaf_module_names: as for :func:`compare_model_outputs`.

    Raises:
        ModelError: a model is not an ``nn.Module``, or was prepared already.
        TraceError: a model cannot be traced.

    Example:
        >>> prepare_model_outputs(float_model, qmodel)  # doctest: +SKIP
        >>> float_model(x); qmodel(x)  # doctest: +SKIP
        >>> act = get_matching_activations(float_model, qmodel)  # doctest: +SKIP
    """
    for model, role in ((float_module, "float model"), (q_module, "quantized model")):
        _check_model(model, role)
        if any(_entry_of(m) is not None for m in model.modules()):
            raise ModelError(
                f"the {role} is prepared already (it has fxns.compat loggers or "
                "shadows); prepare a fresh copy"
            )
    allowed = _allow_list(allow_list)
    matching = match(
        float_module,
        q_module,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    fg, qg = _graphs(matching)
    sites, unread = _output_sites(matching, float_module, q_module, allowed)
    sites += _stub_sites(float_module, q_module, fg, qg, allowed)
    for side, model in ((0, float_module), (1, q_module)):
        by_module: dict[str, dict[int, str]] = {}
        for site in sites:
            path, index = site.read[side]
            by_module.setdefault(path, {})[index] = site.entry
        _attach_loggers(model, by_module, logger_cls)
    logger.info(
        "prepare_model_outputs: %d layers logged, %d matched layers of the "
        "allowed types not logged (their output is not a module's output on "
        "both sides; fxns.compare_activations reports them); %s",
        len(sites),
        len(unread),
        matching.summary(),
    )


def get_matching_activations(
    float_module: nn.Module, q_module: nn.Module
) -> dict[str, dict[str, list[Any]]]:
    """The outputs recorded by the loggers of :func:`prepare_model_outputs`.

    Args:
        float_module: the float model, prepared and run.
        q_module: the quantized model, prepared and run on the same inputs.

    Returns:
        ``{"<layer>.stats": {"float": [...], "quantized": [...]}}``: the
        values each side's logger of a layer recorded, one per forward pass,
        for the layers whose quantized logger recorded anything.

    Example:
        >>> act = get_matching_activations(float_model, qmodel)  # doctest: +SKIP
        >>> act["conv.stats"]["float"][0].shape  # doctest: +SKIP
    """
    float_dict = get_logger_dict(float_module)
    quantized_dict = get_logger_dict(q_module)
    act: dict[str, dict[str, list[Any]]] = {}
    for key, stats in quantized_dict.items():
        if key not in float_dict or not stats[TENSOR_VAL]:
            continue
        act[key] = {FLOAT: float_dict[key][TENSOR_VAL], QUANTIZED: stats[TENSOR_VAL]}
    return act


@dataclass(frozen=True)
class _Site:
    """Where one logged layer's output is read on each side."""

    # The key's stem: the float layer's name.
    entry: str
    # (module path, call index in one forward pass), float side and quantized.
    read: tuple[tuple[str, int], tuple[str, int]]


def _output_sites(
    matching: Matching,
    float_module: nn.Module,
    q_module: nn.Module,
    allowed: frozenset[type],
) -> tuple[list[_Site], list[str]]:
    """The logged layers, and the allowed ones whose output no hook can see."""
    fg, qg = _graphs(matching)
    sites = []
    unread = []
    for pair in matching.pairs:
        modules = _pair_modules(float_module, fg, pair.float_nodes)
        modules += _pair_modules(q_module, qg, pair.quant_nodes)
        if not any(type(m) in allowed for m in modules):
            continue
        f_read = _module_read(fg, pair.float_nodes[-1])
        q_read = _module_read(qg, pair.quant_nodes[-1])
        if f_read is None or q_read is None:
            logger.debug(
                "%s: its output is not a module's output on the %s side; not logged",
                pair.name,
                "float" if f_read is None else "quantized",
            )
            unread.append(pair.name)
            continue
        sites.append(_Site(pair.name, (f_read, q_read)))
    return sites, unread


def _stub_sites(
    float_module: nn.Module,
    q_module: nn.Module,
    fg: OpGraph,
    qg: OpGraph,
    allowed: frozenset[type],
) -> list[_Site]:
    """``QuantStub`` ↔ ``Quantize`` at the same path: the input quantization.

    fxns's canonical graph treats a quantize as part of an edge, not as an
    operation, so no pair stands for it.
    """
    from torch.ao.nn.quantized import Quantize
    from torch.ao.quantization import QuantStub

    sites = []
    f_modules = dict(float_module.named_modules())
    q_modules = dict(q_module.named_modules())
    for path, module in f_modules.items():
        twin = q_modules.get(path)
        if not (isinstance(module, QuantStub) and isinstance(twin, Quantize)):
            continue
        if type(module) not in allowed and type(twin) not in allowed:
            continue
        f_calls = _calls_of(fg, path)
        q_calls = _calls_of(qg, path)
        for index in range(min(len(f_calls), len(q_calls))):
            entry = path if index == 0 else f"{path}:{index}"
            sites.append(_Site(entry, ((path, index), (path, index))))
    return sites


def _module_read(og: OpGraph, fx_name: str) -> tuple[str, int] | None:
    """The module call whose output is the value of fx node ``fx_name``.

    The node itself if it calls a module, else the pass-through module that
    is its only consumer (the ``activation_post_process`` of a
    ``FloatFunctional`` call), as (module path, call index).
    """
    node = og.fx_node(fx_name)
    while node.op != "call_module":
        users = list(node.users)
        if not (
            len(users) == 1
            and users[0].op == "call_module"
            and og.roles.get(users[0].name) is Role.PASS
        ):
            return None
        node = users[0]
    path = str(node.target)
    return path, _calls_of(og, path).index(node.name)


def _calls_of(og: OpGraph, path: str) -> list[str]:
    """The fx nodes that call the module at ``path``, in execution order."""
    return [
        n.name
        for n in og.gm.graph.nodes
        if n.op == "call_module" and str(n.target) == path
    ]


def _pair_modules(
    model: nn.Module, og: OpGraph, fx_names: tuple[str, ...]
) -> list[nn.Module]:
    """The modules of ``model`` that a pair's nodes call, and the
    FloatFunctionals they are in."""
    modules = []
    for name in fx_names:
        node = og.fx_node(name)
        if node.op == "call_module":
            modules.append(model.get_submodule(str(node.target)))
        site = node.meta.get(CALL_SITE)
        if site is not None:
            modules.append(model.get_submodule(site[0]))
    return modules


class _CallLogger:
    """Forward hook of one module: hands the output of its k-th call in a
    forward pass to the logger of that call."""

    def __init__(self, loggers: dict[int, nn.Module]) -> None:
        self.loggers = loggers
        self.calls = 0

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        call_logger = self.loggers.get(self.calls)
        self.calls += 1
        if call_logger is not None:
            call_logger(output)

    def reset(self) -> None:
        self.calls = 0


class _ResetCalls:
    """Forward pre-hook of a prepared model: a new forward pass counts calls
    from zero again."""

    def __init__(self, resets: list[Callable[[], None]]) -> None:
        self.resets = resets

    def __call__(self, module: nn.Module, args: Any) -> None:
        for reset in self.resets:
            reset()


def _attach_loggers(
    model: nn.Module,
    by_module: dict[str, dict[int, str]],
    logger_cls: Callable[[], Any],
) -> None:
    """A logger per (module, call) of ``by_module``, named ``fxns_logger``
    (``fxns_logger_<k>`` for the k-th call), fed by a forward hook."""
    counters = []
    for path, entries in by_module.items():
        module = model.get_submodule(path)
        loggers = {}
        for index, entry in sorted(entries.items()):
            call_logger = _new_logger(logger_cls)
            module.add_module(
                "fxns_logger" if index == 0 else f"fxns_logger_{index}", call_logger
            )
            _name_entry(call_logger, entry)
            loggers[index] = call_logger
        counter = _CallLogger(loggers)
        counters.append(counter.reset)
        module.register_forward_hook(counter)
    model.register_forward_pre_hook(_ResetCalls(counters))


# --- shadows --------------------------------------------------------------------------


def compare_model_stub(
    float_model: nn.Module,
    q_model: nn.Module,
    module_swap_list: Iterable[type[nn.Module]],
    *data: Any,
    logger_cls: Callable[[], Any] = ShadowLogger,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> dict[str, dict[str, list[Any]]]:
    """Each chosen quantized layer next to its float twin fed the same input.

    Runs a copy of ``q_model`` in which the layers of
    :func:`prepare_model_with_stubs` are shadowed: the float twin of each
    runs on the dequantized input the quantized layer received, so the
    difference is that layer's own error. Neither model is changed, and each
    call returns the values of its own ``data`` only.

    Args:
        float_model: the float model.
        q_model: the quantized model.
        module_swap_list: float module types to shadow (``{nn.Conv2d}``, a
            block class such as torchvision's ``QuantizableBasicBlock``).
        data: the positional arguments of one forward pass.
        logger_cls: the logger class, called with (quantized output, float
            output).
        leaf_modules: as for :func:`compare_model_outputs`.
        leaf_module_names: as for :func:`compare_model_outputs`.

    Returns:
        ``{"<layer>.stats": {"float": [output], "quantized": [output]}}``,
        whole batches (the output element of a tuple, see
        :class:`ShadowLogger`).

    Raises:
        ModelError: a model is not an ``nn.Module`` or cannot be copied.
        ArgumentError: ``module_swap_list`` holds something other than module
            classes.
        TraceError: a model cannot be traced.

    Example:
        >>> ob = compare_model_stub(
        ...     float_model, qmodel, {nn.Conv2d}, x
        ... )  # doctest: +SKIP
        >>> for key, pair in ob.items():  # doctest: +SKIP
        ...     print(key, compute_sqnr(pair["float"][0], pair["quantized"][0]))
    """
    float_model = _eval_model(_checked(float_model, "float model"), "float model")
    q_copy = _copy_for_run(q_model, "quantized model")
    prepare_model_with_stubs(
        float_model,
        q_copy,
        module_swap_list,
        logger_cls,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    with torch.no_grad():
        q_copy(*data)
    return get_logger_dict(q_copy)


def prepare_model_with_stubs(
    float_module: nn.Module,
    q_module: nn.Module,
    module_swap_list: Iterable[type[nn.Module]],
    logger_cls: Callable[[], Any],
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> None:
    """Replace chosen quantized modules of ``q_module`` with :class:`Shadow`\\ s,
    in place.

    A float module is chosen when its type, or the type of a part of a fused
    float module, is in ``module_swap_list``:

    - a layer (a module that fxns does not trace into, or a
      ``FloatFunctional``) is paired with its quantized twin by
      :func:`fxns.match`. The shadow computes the whole float side of the
      pair: for float ``conv``, ``bn``, ``relu`` fused into one quantized
      ``ConvReLU2d``, all three. Each call of a module or
      ``FloatFunctional`` used several times per forward pass is logged as
      its own entry (``ff``, ``ff:1``, ...).
    - a block (any other module, e.g. a residual block class) is paired with
      the quantized module at the same path, and shadowed whole.

    A quantized module whose module types are those of its float twin (left
    in float) is not shadowed. When nothing is shadowed, a warning names the
    float modules of those types and why each was not.

    Args:
        float_module: the float model; the shadows call its modules.
        q_module: the quantized model; modified.
        module_swap_list: float module types to shadow.
        logger_cls: the logger class of the shadows.
        leaf_modules: as for :func:`compare_model_outputs`.
        leaf_module_names: as for :func:`compare_model_outputs`.

    Raises:
        ArgumentError: ``module_swap_list`` holds something other than module
            classes.
        ModelError: ``q_module`` was prepared already.
        TraceError: a model cannot be traced.

    Example:
        >>> prepare_model_with_stubs(
        ...     float_model, qmodel, {nn.Conv2d}, ShadowLogger
        ... )  # doctest: +SKIP
        >>> qmodel(x)  # doctest: +SKIP
        >>> ob = get_logger_dict(qmodel)  # doctest: +SKIP
    """
    _check_model(float_module, "float model")
    _check_model(q_module, "quantized model")
    if any(isinstance(m, Shadow) for m in q_module.modules()):
        raise ModelError(
            "the quantized model holds Shadow modules already; prepare a fresh copy"
        )
    swap = _swap_types(module_swap_list)
    tracer = LeafTracer(leaf_modules, leaf_module_names)
    layers, blocks = _chosen(float_module, swap, tracer)

    plan: list[_Stub] = []
    skipped: dict[str, str] = {}
    if layers:
        matching = match(
            float_module,
            q_module,
            leaf_modules=leaf_modules,
            leaf_module_names=leaf_module_names,
        )
        plan += _layer_stubs(matching, float_module, q_module, layers, skipped)
    plan += _block_stubs(float_module, q_module, blocks, skipped)

    counted: list[Shadow] = []
    for stub in plan:
        q_mod = q_module.get_submodule(stub.quant_path)
        shadow = Shadow(q_mod, stub.float_module, logger_cls)
        if stub.calls is not None:
            shadow._log_calls(stub.calls, logger_cls)
            counted.append(shadow)
        else:
            _name_entry(shadow.logger, stub.entry)
        _set_submodule(q_module, stub.quant_path, shadow)
    if counted:
        # Shadows that log each call separately count calls per forward pass.
        resets = [shadow._reset_calls for shadow in counted]
        q_module.register_forward_pre_hook(_ResetCalls(resets))

    if not plan:
        _warn(_nothing_shadowed(swap, layers + blocks, skipped))
    for path, reason in skipped.items():
        logger.info("prepare_model_with_stubs: %s not shadowed: %s", path, reason)
    logger.info("prepare_model_with_stubs: %d modules shadowed", len(plan))


@dataclass
class _Stub:
    """One Shadow to put into the quantized model."""

    # Where it goes in the quantized model.
    quant_path: str
    # What computes the float side.
    float_module: nn.Module
    # The entry of its only logger (when ``calls`` is None).
    entry: str
    # Per call index in a forward pass, the entry logged (None: not logged).
    calls: list[str | None] | None = None
    # The float fx nodes of each call's pair, to check they agree.
    float_nodes: list[tuple[str, ...]] = field(default_factory=list)


def _chosen(
    float_module: nn.Module, swap: frozenset[type], tracer: LeafTracer
) -> tuple[list[str], list[str]]:
    """Paths of the chosen float layers and of the chosen float blocks.

    Like the eager suite, a chosen module's children are not looked at.
    """
    from torch.ao.nn.quantized import FloatFunctional

    layers: list[str] = []
    blocks: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = _join(prefix, name)
            if not _is_swapped(child, swap):
                walk(child, path)
            elif isinstance(child, FloatFunctional) or tracer.is_leaf_module(
                child, path
            ):
                layers.append(path)
            else:
                blocks.append(path)

    walk(float_module, "")
    return layers, blocks


def _is_swapped(module: nn.Module, swap: frozenset[type]) -> bool:
    """Its type is listed, or it is a fused float module with a listed part."""
    if type(module) in swap:
        return True
    fused = type(module).__module__.startswith("torch.ao.nn.intrinsic.modules")
    return fused and any(type(part) in swap for part in module.children())


def _layer_stubs(
    matching: Matching,
    float_module: nn.Module,
    q_module: nn.Module,
    layers: list[str],
    skipped: dict[str, str],
) -> list[_Stub]:
    """A Shadow per quantized module whose pair holds a chosen float layer."""
    fg, qg = _graphs(matching)
    chosen = set(layers)
    stubs: dict[str, _Stub] = {}
    found: set[str] = set()
    for pair in matching.pairs:
        owners = _float_owners(fg, pair)
        hit = [path for path in owners if path in chosen]
        if not hit:
            continue
        found.update(hit)
        where = _quant_module_call(qg, pair)
        if isinstance(where, str):
            skipped[pair.name] = where
            continue
        quant_path, index, n_calls = where
        float_part = _float_computation(float_module, fg, pair)
        if isinstance(float_part, str):
            skipped[pair.name] = float_part
            continue
        q_mod = q_module.get_submodule(quant_path)
        if _same_module_types(q_mod, float_part):
            skipped[pair.name] = (
                f"the quantized module '{quant_path}' is the same kind of module "
                "as the float one (left in float)"
            )
            continue
        stub = stubs.get(quant_path)
        if stub is None:
            stub = stubs[quant_path] = _Stub(
                quant_path, float_part, pair.name, [None] * n_calls
            )
        elif not _same_computation(fg, stub, float_part, pair):
            skipped[pair.name] = (
                f"'{quant_path}' is shadowed by a different float computation "
                "in another of its calls"
            )
            continue
        assert stub.calls is not None
        stub.calls[index] = pair.name
        stub.float_nodes.append(pair.float_nodes)
    for path in layers:
        if path not in found:
            skipped.setdefault(path, "no quantized operation is matched to it")
    return list(stubs.values())


def _float_owners(fg: OpGraph, pair: Pair) -> list[str]:
    """Paths of the float modules (and FloatFunctionals) of a pair."""
    owners = []
    for name in pair.float_nodes:
        node = fg.fx_node(name)
        site = node.meta.get(CALL_SITE)
        if site is not None:
            owners.append(site[0])
        elif node.op == "call_module":
            owners.append(str(node.target))
    return owners


def _quant_module_call(qg: OpGraph, pair: Pair) -> tuple[str, int, int] | str:
    """(module path, call index, calls per forward) of the one quantized
    module (or QFunctional) that computes a pair; else why there is none."""
    calls = set()
    for name in pair.quant_nodes:
        node = qg.fx_node(name)
        site = node.meta.get(CALL_SITE)
        if site is not None:
            calls.add(("functional", site[0], site[1]))
        elif node.op == "call_module" and qg.roles.get(name) is not Role.PASS:
            path = str(node.target)
            calls.add(("module", path, _calls_of(qg, path).index(name)))
    if len(calls) != 1:
        ops = ", ".join(pair.quant_ops) or "nothing"
        return (
            f"its quantized side ({ops}) is not one module call, so no module "
            "can be swapped for a Shadow"
        )
    ((how, path, index),) = calls
    if how == "module":
        n_calls = len(_calls_of(qg, path))
    else:
        n_calls = 1 + max(
            n.meta[CALL_SITE][1]
            for n in qg.gm.graph.nodes
            if n.meta.get(CALL_SITE, ("",))[0] == path
        )
    return path, index, n_calls


def _float_computation(
    float_module: nn.Module, fg: OpGraph, pair: Pair
) -> nn.Module | str:
    """What the float side of a pair computes, as a module; else why not.

    One module call: that module. A ``FloatFunctional`` call: the
    ``FloatFunctional``, whose method the Shadow calls. Several nodes (a
    fused group such as conv, bn, relu): a ``GraphModule`` that runs them.
    """
    owners = _float_owners(fg, pair)
    site = fg.fx_node(pair.float_nodes[0]).meta.get(CALL_SITE)
    if site is not None:
        return float_module.get_submodule(site[0])
    if len(pair.float_nodes) == 1 and len(owners) == 1:
        return float_module.get_submodule(owners[0])
    return _float_chain(fg, pair)


def _float_chain(fg: OpGraph, pair: Pair) -> nn.Module | str:
    """A GraphModule of a pair's float nodes, fed the first node's one input.

    The nodes between the first and the last that depend only on the pair
    (pass-throughs such as an ``Identity``) are copied with them.
    """
    nodes = [fg.fx_node(n) for n in pair.float_nodes]
    inputs = [a for a in nodes[0].all_input_nodes if a.op != "get_attr"]
    if len(inputs) != 1:
        return (
            f"its float side starts with {pair.float_ops[0]}, which takes "
            f"{len(inputs)} inputs; only a group fed by one input can be shadowed"
        )
    graph = fx.Graph()
    env: dict[str, fx.Node] = {inputs[0].name: graph.placeholder("x")}
    root: dict[str, Any] = {}
    members = set(pair.float_nodes)
    last = nodes[-1]
    for node in fg.gm.graph.nodes:
        if node.op == "get_attr":
            continue  # copied where it is read
        if node.name not in members and not _between(fg, nodes[0], node, last):
            continue
        outside = [
            a.name
            for a in node.all_input_nodes
            if a.name not in env and a.op != "get_attr"
        ]
        if outside and node.name in members:
            return (
                f"its float node '{node.name}' reads '{outside[0]}', which is "
                "outside the group"
            )
        if outside:
            continue  # another branch that runs meanwhile
        for arg in node.all_input_nodes:
            if arg.name not in env:
                env[arg.name] = graph.node_copy(arg)
                root[str(arg.target)] = _attribute(fg.gm, str(arg.target))
        env[node.name] = graph.node_copy(node, lambda a: env[a.name])
        if node.op == "call_module":
            root[str(node.target)] = fg.gm.get_submodule(str(node.target))
        if node is last:
            break
    graph.output(env[last.name])
    graph.lint()
    return fx.GraphModule(root, graph, "FloatShadow")


def _between(fg: OpGraph, first: fx.Node, node: fx.Node, last: fx.Node) -> bool:
    index = fg.fx_index
    return index[first.name] < index[node.name] < index[last.name]


def _same_computation(
    fg: OpGraph, stub: _Stub, float_part: nn.Module, pair: Pair
) -> bool:
    """Whether another call's float side is what ``stub`` computes already:
    the same module, or a group of the same nodes' targets."""
    if float_part is stub.float_module:
        return True
    return _targets(fg, stub.float_nodes[0]) == _targets(fg, pair.float_nodes)


def _targets(fg: OpGraph, fx_names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(fg.fx_node(n).target) for n in fx_names)


def _block_stubs(
    float_module: nn.Module,
    q_module: nn.Module,
    blocks: list[str],
    skipped: dict[str, str],
) -> list[_Stub]:
    """A Shadow per chosen float block, at the same path in ``q_module``."""
    stubs = []
    for path in blocks:
        try:
            q_mod = q_module.get_submodule(path)
        except AttributeError:
            skipped[path] = f"the quantized model has no module '{path}'"
            continue
        float_block = float_module.get_submodule(path)
        if _same_module_types(q_mod, float_block):
            skipped[path] = "its quantized twin has the same module types (float)"
            continue
        stubs.append(_Stub(path, float_block, path))
    return stubs


def _same_module_types(a: nn.Module, b: nn.Module) -> bool:
    return [type(m) for m in a.modules()] == [type(m) for m in b.modules()]


def _nothing_shadowed(
    swap: frozenset[type], chosen: list[str], skipped: dict[str, str]
) -> str:
    names = ", ".join(sorted(t.__name__ for t in swap))
    if not chosen:
        return (
            f"compare_model_stub/prepare_model_with_stubs: the float model has no "
            f"module of the types in module_swap_list ({names}); nothing is "
            "shadowed. List the float model's module types (fused float modules "
            "are found by their parts' types)"
        )
    reasons = "; ".join(f"{path}: {why}" for path, why in list(skipped.items())[:5])
    return (
        f"compare_model_stub/prepare_model_with_stubs: none of the float modules "
        f"of the types in module_swap_list ({names}) could be shadowed: {reasons}"
    )


# --- logger dicts ---------------------------------------------------------------------


def get_logger_dict(mod: nn.Module, prefix: str = "") -> dict[str, dict[str, Any]]:
    """The ``stats`` of every logger in ``mod``, keyed ``"<layer>.stats"``.

    Loggers attached by this module are keyed by the layer they log (the
    float layer's name, ``:<k>`` added for the k-th call of a module called
    several times); any other logger by the path of the module that holds it,
    the first logger of each module only, as in the eager suite.

    Args:
        mod: a model prepared by :func:`prepare_model_outputs` or
            :func:`prepare_model_with_stubs` (or holding loggers otherwise).
        prefix: put in front of every key, joined with ``"."``.

    Example:
        >>> prepare_model_with_stubs(
        ...     float_model, qmodel, {nn.Linear}, ShadowLogger
        ... )  # doctest: +SKIP
        >>> qmodel(x)  # doctest: +SKIP
        >>> sorted(get_logger_dict(qmodel))  # doctest: +SKIP
        ['fc1.stats', 'fc2.stats']
    """
    _check_model(mod, "model")
    loggers = _logger_types()
    result: dict[str, dict[str, Any]] = {}

    def walk(module: nn.Module, path: str) -> None:
        unnamed_seen = False
        for child in module.children():
            if not isinstance(child, loggers):
                continue
            stats = getattr(child, STATS)
            entry = _entry_of(child)
            if entry is not None:
                result[_join(_join(prefix, entry), STATS)] = stats
            elif not unnamed_seen:
                unnamed_seen = True
                result[_join(path, STATS)] = stats
        for name, child in module.named_children():
            walk(child, _join(path, name))

    walk(mod, prefix)
    return result


# --- helpers --------------------------------------------------------------------------


@functools.cache
def _logger_types() -> tuple[type, ...]:
    """fxns's logger class, and torch's (so that its loggers are found too)."""
    with quiet_torch_ao():
        from torch.ao.ns._numeric_suite import Logger as TorchLogger
    return (Logger, TorchLogger)


def _new_logger(logger_cls: Callable[[], Any]) -> nn.Module:
    if not callable(logger_cls):
        raise ArgumentError(
            f"logger_cls must be a logger class such as OutputLogger or "
            f"ShadowLogger, got {logger_cls!r}"
        )
    instance = logger_cls()
    if not isinstance(instance, nn.Module):
        raise ArgumentError(
            f"logger_cls() must return an nn.Module (subclass fxns.compat.Logger), "
            f"got {type(instance).__name__}"
        )
    return instance


def _dequantize_module() -> nn.Module:
    from torch.ao.nn.quantized import DeQuantize

    return DeQuantize()


def _allow_list(allow_list: Iterable[type[nn.Module]] | None) -> frozenset[type]:
    if allow_list is None:
        with quiet_torch_ao():
            from torch.ao.quantization.quantization_mappings import (
                get_default_compare_output_module_list,
            )

            defaults = get_default_compare_output_module_list()
        return frozenset(t for t in defaults if isinstance(t, type))
    return _module_types(allow_list, "allow_list")


def _swap_types(module_swap_list: Iterable[type[nn.Module]]) -> frozenset[type]:
    return _module_types(module_swap_list, "module_swap_list")


def _module_types(types: Any, role: str) -> frozenset[type]:
    if isinstance(types, type) or not isinstance(types, Iterable):
        shown = getattr(types, "__name__", repr(types))
        raise ArgumentError(
            f"{role} must be a set of module classes, got {shown}; e.g. "
            f"{role}={{{shown}}}"
        )
    result = frozenset(types)
    for cls in result:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ArgumentError(
                f"{role} holds {cls!r}, not an nn.Module class; give classes "
                "such as nn.Conv2d"
            )
    return result


def _check_model(model: object, role: str) -> None:
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"the {role} must be a torch.nn.Module, got {type(model).__name__}; "
            "pass the model object itself"
        )


def _checked(model: Any, role: str) -> nn.Module:
    _check_model(model, role)
    return model


def _copy_for_run(model: Any, role: str) -> nn.Module:
    """A copy of ``model`` in eval mode that loggers may be attached to."""
    _check_model(model, role)
    evaluated = _eval_model(model, role)
    return evaluated if evaluated is not model else _own_copy(model, role)


def _graphs(matching: Matching) -> tuple[OpGraph, OpGraph]:
    assert matching.float_graph is not None and matching.quant_graph is not None
    return matching.float_graph, matching.quant_graph


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def _attribute(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
