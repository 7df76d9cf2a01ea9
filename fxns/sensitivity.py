"""Sensitivity: which layers to keep in float, measured on the real kernels.

For every matched layer *L* of a float model and its FX-quantized version,
:func:`sensitivity` builds two more quantized models and measures the
end-to-end output SQNR of each against the float model:

- ``sqnr_alone``: only *L* is quantized, everything else runs in float;
- ``sqnr_float``: everything is quantized except *L*, which stays float;
- ``gain`` = ``sqnr_float`` − the SQNR of the fully quantized model: what
  keeping *L* in float buys, in dB.

Each is a real quantized model, made with ``prepare_fx``/``convert_fx`` and a
``QConfigMapping`` that differs from the base one at *L* only, and run on
PyTorch's quantized CPU kernels. Nothing is simulated.

The steps:

1. Quantize the whole model once (``prepare_fx``, calibration,
   ``convert_fx``) and match it with the float model: its pairs are the
   layers (a fused conv+bn+relu is one layer).
2. For each layer, two mappings: the base one with *L*'s nodes set to
   ``None``, and an empty one with *L*'s nodes set to the qconfig the base
   gave them. Nodes are addressed the way ``prepare_fx`` looks them up
   (``set_module_name_object_type_order``: parent module, op type, call
   index), so a module called twice is still two layers. After ``prepare_fx``
   the assigned qconfigs are checked: a layer that cannot be isolated gets a
   note instead of numbers.
3. Copy the calibrated observers of step 1 into each prepared model where
   an observer watches the same values as in step 1: a value is the same
   float value whatever else is quantized (a prepared model computes in
   float), so the copy is exact. Only the observers without such a
   counterpart (where sharing differs, around a ``cat`` or a pooling whose
   neighbour changed) are calibrated again.
4. Convert, run on the data, compare the output with the float model's.

Cost, for ``L`` layers, ``B`` batches of data and ``C`` calibration batches:
``(2·L + 2)·B + C`` model runs and ``2·L + 1`` ``prepare_fx``/``convert_fx``
passes, plus ``C`` runs for each model whose calibration could not be
reused (``report.meta["calibrations"]`` counts them). Restrict ``layers`` to
make it cheaper.

Limits: only static and dynamic quantization with ``prepare_fx`` (not QAT,
not eager mode); a layer made of method calls (``x.mean()``) cannot be
addressed alone by a ``QConfigMapping`` and is reported with a note.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from .checks import check_float
from .compare import (
    CONVERT_BATCHES,
    _check_input_fn,
    _describe,
    _eval_model,
    _first_line,
    _meta,
    _n_inputs,
    iter_batches,
    model_args,
)
from .errors import DataError, FxnsError, ModelError
from .match import Pair, match
from .progress import progress
from .quantize import backend_config, qconfig_mapping_for, quiet_torch_ao
from .report import GAIN, SQNR_ALONE, SQNR_FLOAT, LayerResult, Report
from .stats import ErrorStats
from .trace import trace

if TYPE_CHECKING:
    from torch.ao.quantization import QConfigMapping

__all__ = ["GAIN", "SQNR_ALONE", "SQNR_FLOAT", "sensitivity"]

logger = logging.getLogger(__name__)


InputFn = Callable[[Any], Any]


def sensitivity(
    float_model: nn.Module,
    data: Any,
    *,
    backend: str = "x86",
    qconfig_mapping: QConfigMapping | None = None,
    fusion: str = "all",
    calibration: Any = None,
    layers: Sequence[str] | None = None,
    input_fn: InputFn | None = None,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> Report:
    """Rank the layers by how much keeping each one in float would help.

    Cost: ``(2·L + 2)·B + C`` model runs for ``L`` layers, ``B`` batches of
    ``data`` and ``C`` calibration batches, and ``2·L + 1`` passes of
    ``prepare_fx``/``convert_fx`` (see the module docstring). A progress bar
    shows on a terminal.

    Args:
        float_model: the float model (never changed).
        data: the batches the output SQNR is measured on (as for
            :func:`fxns.compare_activations`).
        backend: ``x86``, ``fbgemm``, ``qnnpack``, ``onednn`` or ``dynamic``:
            picks the default ``QConfigMapping``. The models run on the
            current ``torch.backends.quantized.engine``.
        qconfig_mapping: the base mapping instead of the backend's default.
        fusion: ``all``, ``conv_bn`` or ``none`` (see
            :data:`fxns.quantize.FUSIONS`).
        calibration: batches to calibrate on (default: ``data``).
        layers: only these layers (row names as in
            :func:`fxns.compare_activations`, e.g. ``"layer1.0.conv1"``).
        input_fn: picks the model's arguments out of each batch.
        leaf_modules: module classes to keep as single operations.
        leaf_module_names: submodule names to keep as single operations.

    Returns:
        A :class:`~fxns.Report` with ``mode="sensitivity"`` and one row per
        layer, largest gain first. Metrics: ``gain`` (dB of end-to-end SQNR
        gained by keeping the layer in float), ``sqnr_float`` (output SQNR
        with only that layer in float) and ``sqnr_alone`` (output SQNR with
        only that layer quantized). ``meta["baseline_sqnr"]`` is the output
        SQNR of the fully quantized model.

    Raises:
        ArgumentError: an unknown ``backend`` or ``fusion``, or an
            ``input_fn`` that is not a function.
        DataError: ``data`` is empty or does not fit the model.
        ModelError: the float model is already quantized, ``prepare_fx``
            cannot quantize it, or a name in ``layers`` is not a layer.

    Example:
        >>> r = fxns.sensitivity(model, batches)  # doctest: +SKIP
        >>> print(r.table(top=5))  # doctest: +SKIP
        >>> [row.name for row in r if row.metrics.get("gain", 0) > 1]  # doctest: +SKIP
        ['fc', 'layer4.1.conv2']
    """
    # Options first: a typo should not wait for the model to be traced.
    base_mapping = (
        qconfig_mapping if qconfig_mapping is not None else qconfig_mapping_for(backend)
    )
    config = backend_config(fusion)
    _check_input_fn(input_fn)

    float_model = _eval_model(float_model, "float model")
    traced = trace(
        float_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
        role="float model",
    )
    check_float(traced, "sensitivity quantizes the float model itself")
    n_inputs = _n_inputs(traced)
    batches = _materialize(data, input_fn, n_inputs, "data")
    calib = (
        batches
        if calibration is None
        else _materialize(calibration, input_fn, n_inputs, "calibration")
    )
    quantizer = _Quantizer(
        float_model,
        base_mapping,
        config,
        calib,
        leaf_modules,
        leaf_module_names,
    )

    references = _run(float_model, batches)
    base = quantizer.base_model()
    baseline = _output_sqnr(base, batches, references)
    evaluated = 2  # models run on the data: the float one and the base one
    matching = match(
        float_model,
        base,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    pairs = _select(matching.pairs, layers)

    results: dict[str, dict[str, float]] = {p.name: {} for p in pairs}
    notes: dict[str, str] = {}
    steps = [(pair, keep_float) for pair in pairs for keep_float in (True, False)]
    for pair, keep_float in progress(steps, desc="fxns sensitivity", unit="model"):
        if pair.name in notes:
            continue
        try:
            model = quantizer.variant(pair, keep_float=keep_float)
        except _NotIsolated as err:
            notes[pair.name] = str(err)
            continue
        try:
            value = _output_sqnr(model, batches, references, repeat=True)
        except FxnsError:
            raise
        except Exception as err:
            setting = "in float" if keep_float else "quantized"
            notes[pair.name] = (
                f"not measured: the model with only this layer {setting} fails "
                f"to run: {type(err).__name__}: {_first_line(err)}"
            )
            continue
        evaluated += 1
        if keep_float:
            results[pair.name][GAIN] = value - baseline
            results[pair.name][SQNR_FLOAT] = value
        else:
            results[pair.name][SQNR_ALONE] = value

    rows = [_row(pair, results[pair.name], notes.get(pair.name, "")) for pair in pairs]
    rows.sort(key=_rank)
    meta = _meta(matching, len(batches), rows)
    meta.update(
        calibration_batches=len(calib),
        baseline_sqnr=baseline,
        backend=backend,
        fusion=fusion,
        calibrations=quantizer.calibrations,
        model_runs=quantizer.runs + evaluated * len(batches),
    )
    report = Report(rows, mode="sensitivity", meta=meta)
    logger.info(report.summary())
    return report


# --- quantizing one layer at a time -----------------------------------------------


class _NotIsolated(FxnsError):
    """A layer whose qconfig cannot be changed without changing others."""


@dataclass(frozen=True)
class _Address:
    """How ``prepare_fx`` looks up the qconfig of one node."""

    # The parent module path and the op type (module class or function).
    module: str
    kind: Any
    # The node's index among the nodes of that type in that module.
    index: int


class _Quantizer:
    """Makes the base quantized model and the one-layer variants of it."""

    def __init__(
        self,
        float_model: nn.Module,
        mapping: QConfigMapping,
        config: Any,
        calibration: list[tuple[Any, ...]],
        leaf_modules: Sequence[type[nn.Module]],
        leaf_module_names: Sequence[str],
    ) -> None:
        from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

        self.float_model = float_model
        self.mapping = mapping
        self.config = config
        self.calibration = calibration
        self.custom = (
            PrepareCustomConfig()
            .set_non_traceable_module_classes(list(leaf_modules))
            .set_non_traceable_module_names(list(leaf_module_names))
        )
        # Runs of the model on calibration data, and models calibrated.
        self.runs = 0
        self.calibrations = 0
        self.prepared = self._prepare(mapping)
        self._calibrate(self.prepared)
        self.qconfigs: dict[str, Any] = _qconfigs(self.prepared)
        self.addresses = _addresses(self.prepared)
        # The calibrated observers, by the set of values each one watches.
        self.observers = {
            watched: module for _, watched, module in _observer_groups(self.prepared)
        }
        # Module targets of call_module nodes, and how often each is called.
        self.targets = {
            n.name: str(n.target)
            for n in self.prepared.graph.nodes
            if n.op == "call_module" and n.name in self.addresses
        }
        self.calls = Counter(self.targets.values())

    def base_model(self) -> fx.GraphModule:
        return self._convert(copy.deepcopy(self.prepared))

    def variant(self, pair: Pair, *, keep_float: bool) -> fx.GraphModule:
        """The model with only ``pair`` in float, or with only ``pair`` quantized."""
        from torch.ao.quantization import QConfigMapping

        nodes = [n for n in pair.float_nodes if n in self.addresses]
        if not nodes:
            raise _NotIsolated(
                "not measured: none of its nodes has a qconfig of its own in "
                "prepare_fx (method calls cannot be addressed by QConfigMapping)"
            )
        mapping = copy.deepcopy(self.mapping) if keep_float else QConfigMapping()
        for name in nodes:
            a = self.addresses[name]
            qconfig = None if keep_float else self.qconfigs.get(name)
            mapping.set_module_name_object_type_order(
                a.module, a.kind, a.index, qconfig
            )
        prepared = self._prepare(mapping)
        self._check_isolated(prepared, set(nodes), keep_float)
        self._copy_observers(prepared)
        shared = {
            target: type(prepared.get_submodule(target))
            for target in (self.targets.get(n) for n in nodes)
            if target is not None and self.calls[target] > 1
        }
        converted = self._convert(prepared)
        for target, before in shared.items():
            # convert_fx swaps a module for all of its calls at once.
            if type(converted.get_submodule(target)) is not before:
                raise _NotIsolated(
                    f"not measured: module '{target}' is called "
                    f"{self.calls[target]} times and convert_fx quantizes a module "
                    "for all its calls, so one call cannot be changed alone"
                )
        return converted

    def _prepare(self, mapping: QConfigMapping) -> fx.GraphModule:
        from torch.ao.quantization.quantize_fx import prepare_fx

        example = self.calibration[0]
        with quiet_torch_ao():
            try:
                return prepare_fx(
                    copy.deepcopy(self.float_model),
                    mapping,
                    example,
                    prepare_custom_config=self.custom,
                    backend_config=self.config,
                )
            except Exception as err:
                raise ModelError(
                    f"prepare_fx cannot quantize the float model "
                    f"({type(self.float_model).__name__}): {type(err).__name__}: "
                    f"{_first_line(err)}; mark untraceable submodules with "
                    "leaf_module_names="
                ) from err

    def _calibrate(self, prepared: fx.GraphModule) -> None:
        with torch.no_grad(), quiet_torch_ao():
            for index, args in enumerate(self.calibration):
                try:
                    prepared(*args)
                except Exception as err:
                    raise DataError(
                        f"calibration batch {index} ({_describe(args)}) does not "
                        f"fit the float model: {type(err).__name__}: "
                        f"{_first_line(err)}. Give batches of the shape and dtype "
                        f"the model takes, {CONVERT_BATCHES}"
                    ) from err
        self.runs += len(self.calibration)
        self.calibrations += 1

    def _convert(self, prepared: fx.GraphModule) -> fx.GraphModule:
        from torch.ao.quantization.quantize_fx import convert_fx

        with quiet_torch_ao():
            return convert_fx(prepared, backend_config=self.config)

    def _check_isolated(
        self, prepared: fx.GraphModule, nodes: set[str], keep_float: bool
    ) -> None:
        got = _qconfigs(prepared)
        changed = []
        for name in self.addresses:
            chosen = name in nodes
            wanted = self.qconfigs.get(name) is not None and (
                not chosen if keep_float else chosen
            )
            if (got.get(name) is not None) != wanted:
                changed.append(name)
        if changed:
            raise _NotIsolated(
                "not measured: prepare_fx did not give this layer a qconfig of "
                f"its own (it also changed {', '.join(changed[:3])})"
            )

    def _copy_observers(self, prepared: fx.GraphModule) -> None:
        """Put the base model's calibrated observers in; calibrate the rest.

        An observer is copied only if it watches exactly the values its base
        counterpart watched: an observer shared by several values (the inputs
        and output of a ``cat``, say) holds the statistics of all of them.
        The others are calibrated with the copies set aside meanwhile, so a
        calibration run costs little more than a float forward pass.
        Observers that hold no statistics (fixed qparams, placeholders) need
        no calibration.
        """
        copies: list[tuple[list[str], nn.Module]] = []
        needs_data = False
        for targets, watched, observer in _observer_groups(prepared):
            reference = self.observers.get(watched)
            if reference is not None and _same_kind(reference, observer):
                copies.append((targets, copy.deepcopy(reference)))
            elif not isinstance(observer, _stateless_observers()):
                needs_data = True
        if needs_data:
            for targets, _ in copies:
                for target in targets:
                    _set_submodule(prepared, target, nn.Identity())
            self._calibrate(prepared)
        for targets, observer in copies:
            # One object for all its names, so that sharing is kept.
            for target in targets:
                _set_submodule(prepared, target, observer)


def _qconfigs(prepared: fx.GraphModule) -> dict[str, Any]:
    return dict(prepared.meta["_observed_graph_module_attrs"].node_name_to_qconfig)


def _addresses(prepared: fx.GraphModule) -> dict[str, _Address]:
    """Each node's (parent module, type, index) in prepare_fx's own count."""
    scopes = prepared.meta["_observed_graph_module_attrs"].node_name_to_scope
    counts: dict[tuple[str, Any], int] = defaultdict(int)
    addresses = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module":
            if _is_observer(prepared.get_submodule(str(node.target))):
                continue
            path, kind = scopes[node.name]
            parent = path.rpartition(".")[0]
        elif node.op == "call_function":
            parent, _ = scopes[node.name]
            kind = node.target
        else:
            continue
        addresses[node.name] = _Address(parent, kind, counts[parent, kind])
        counts[parent, kind] += 1
    return addresses


def _observer_nodes(prepared: fx.GraphModule) -> Iterable[tuple[fx.Node, nn.Module]]:
    # Not named_modules(): an observer shared by two values has two names.
    for node in prepared.graph.nodes:
        if node.op == "call_module":
            module = prepared.get_submodule(str(node.target))
            if _is_observer(module):
                yield node, module


def _observer_groups(
    prepared: fx.GraphModule,
) -> list[tuple[list[str], frozenset[str], nn.Module]]:
    """Each observer object: its names, the values it watches, the object."""
    groups: dict[int, tuple[list[str], set[str], nn.Module]] = {}
    for node, module in _observer_nodes(prepared):
        targets, watched, _ = groups.setdefault(id(module), ([], set(), module))
        targets.append(str(node.target))
        source = node.args[0]
        watched.add(source.name if isinstance(source, fx.Node) else repr(source))
    return [(t, frozenset(w), m) for t, w, m in groups.values()]


def _is_observer(module: nn.Module) -> bool:
    from torch.ao.quantization import FakeQuantizeBase, ObserverBase

    return isinstance(module, ObserverBase | FakeQuantizeBase)


def _stateless_observers() -> tuple[type[nn.Module], ...]:
    from torch.ao.quantization.observer import (
        FixedQParamsObserver,
        NoopObserver,
        PlaceholderObserver,
    )

    return (FixedQParamsObserver, NoopObserver, PlaceholderObserver)


def _same_kind(a: nn.Module, b: nn.Module) -> bool:
    attrs = ("dtype", "qscheme", "quant_min", "quant_max", "reduce_range", "ch_axis")
    return type(a) is type(b) and all(
        getattr(a, k, None) == getattr(b, k, None) for k in attrs
    )


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


# --- running ---------------------------------------------------------------------


def _materialize(
    data: Any, input_fn: InputFn | None, n_inputs: int | None, role: str
) -> list[tuple[Any, ...]]:
    whole = isinstance(data, tuple)
    batches = [
        model_args(b, i, input_fn, n_inputs, whole_data=whole)
        for i, b in enumerate(iter_batches(data))
    ]
    if not batches:
        raise DataError(f"{role} is empty: give at least one batch")
    return batches


def _run(model: nn.Module, batches: list[tuple[Any, ...]]) -> list[list[torch.Tensor]]:
    outputs = []
    with torch.no_grad():
        for index, args in enumerate(batches):
            try:
                outputs.append(_tensors(model(*args)))
            except Exception as err:
                raise DataError(
                    f"the float model failed on batch {index}: "
                    f"{type(err).__name__}: {_first_line(err)}"
                ) from err
    return outputs


def _output_sqnr(
    model: nn.Module,
    batches: list[tuple[Any, ...]],
    references: list[list[torch.Tensor]],
    *,
    repeat: bool = False,
) -> float:
    """The output SQNR of ``model`` against the float outputs.

    ``repeat``: the model is one of many variants of a model already run, so
    PyTorch's runtime warnings were already shown once (for the base model)
    and are not repeated for every variant.
    """
    stats = ErrorStats()
    with torch.no_grad(), warnings.catch_warnings():
        if repeat:
            warnings.simplefilter("ignore", UserWarning)
        for args, expected in zip(batches, references, strict=True):
            got = _tensors(model(*args))
            if len(got) != len(expected):
                raise ModelError(
                    f"the quantized model returns {len(got)} tensors where the "
                    f"float model returns {len(expected)}"
                )
            for f, q in zip(expected, got, strict=True):
                stats.update(f, q)
    return stats.metrics()["sqnr"]


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a model output, in a fixed order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, list | tuple):
        return [t for item in output for t in _tensors(item)]
    if isinstance(output, Mapping):
        return [t for key in sorted(output) for t in _tensors(output[key])]
    return []


# --- the report ------------------------------------------------------------------


def _select(pairs: list[Pair], layers: Sequence[str] | None) -> list[Pair]:
    if layers is None:
        return pairs
    known = {p.name: p for p in pairs}
    missing = [name for name in layers if name not in known]
    if missing:
        raise ModelError(
            f"no layer named {', '.join(map(repr, missing))}; the layers are "
            f"{', '.join(list(known)[:8])}{', ...' if len(known) > 8 else ''}"
        )
    wanted = set(layers)
    return [p for p in pairs if p.name in wanted]


def _row(pair: Pair, metrics: dict[str, float], note: str) -> LayerResult:
    ordered = {k: metrics[k] for k in (GAIN, SQNR_FLOAT, SQNR_ALONE) if k in metrics}
    return LayerResult(
        name=pair.name,
        kind=pair.kind,
        float_nodes=pair.float_nodes,
        quant_nodes=pair.quant_nodes,
        metrics=ordered,
        float_ops=pair.float_ops,
        quant_ops=pair.quant_ops,
        note=note,
    )


def _rank(row: LayerResult) -> tuple[int, float]:
    gain = row.metrics.get(GAIN, math.nan)
    if math.isnan(gain):
        return (1, 0.0)
    # +inf gain (the float output comes back exactly) ranks first.
    return (0, -gain)
