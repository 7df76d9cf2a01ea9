"""The one-call entry points: trace, match, instrument, run, report.

:func:`compare_weights` and :func:`compare_activations` do the whole pipeline
in one call. :func:`add_loggers`, :func:`add_shadows` and :func:`collect` split
it for users who run the instrumented models in their own loop.

None of these functions changes the models it is given: instrumented models
are new ``GraphModule``s, and a model found in training mode is compared
through an eval-mode copy (with a warning).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from .errors import DataError, FxnsError, ModelError
from .instrument import (
    Instrumented,
    Probe,
    build_logger_pair,
    build_propagated,
    build_shadow,
    state_of,
)
from .match import Matching, match
from .progress import count_batches, progress
from .report import LayerResult, Report, VariantReport
from .stats import ErrorStats
from .variants import float_layers
from .weights import weight_pairs

__all__ = [
    "MODES",
    "add_loggers",
    "add_shadows",
    "collect",
    "compare_activations",
    "compare_variants",
    "compare_weights",
]

logger = logging.getLogger(__name__)

MODES = ("shadow", "propagated")

InputFn = Callable[[Any], Any]


def compare_weights(
    float_model: nn.Module,
    quant_model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> Report:
    """Compare every matched weight of the float model with its quantized twin.

    Conv and linear weights are compared with the dequantized quantized weight.
    Where quantization folded a ``batch_norm`` into a conv, the float weight is
    folded the same way first, so the number says how well the folded weight
    was quantized.

    Args:
        float_model: the float model.
        quant_model: its quantized version.
        leaf_modules: module classes to keep as single operations when tracing.
        leaf_module_names: submodule names to keep as single operations.

    Returns:
        A :class:`Report` with one row per weighted layer.

    Example:
        >>> r = fxns.compare_weights(float_model, quant_model)  # doctest: +SKIP
        >>> print(r.table(sort_by="sqnr", top=5))  # doctest: +SKIP
    """
    float_model = _eval_model(float_model, "float model")
    quant_model = _eval_model(quant_model, "quantized model")
    matching = match(
        float_model,
        quant_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    rows = []
    for w in weight_pairs(matching):
        stats = ErrorStats()
        note = w.note
        try:
            stats.update(w.float_weight, w.quant_weight)
        except ValueError as err:
            note = f"not compared: {err}"
        rows.append(
            _row(
                w.pair.name,
                w.pair.kind,
                w.pair.float_nodes,
                w.pair.quant_nodes,
                w.pair.float_ops,
                w.pair.quant_ops,
                stats if not note.startswith("not compared") else None,
                note,
            )
        )
    report = Report(rows, mode="weights", meta=_meta(matching))
    logger.info(report.summary())
    return report


def compare_activations(
    float_model: nn.Module,
    quant_model: nn.Module,
    data: Any,
    *,
    mode: str = "shadow",
    input_fn: InputFn | None = None,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> Report:
    """Run both models on ``data`` and report the error of every matched layer.

    Args:
        float_model: the float model.
        quant_model: its quantized version.
        data: one batch (a ``Tensor``, or a ``tuple`` of positional arguments)
            or an iterable of batches (a ``list``, a generator, a
            ``DataLoader``).
        mode: ``"shadow"``: each layer's own error (its float twin run on the
            quantized layer's dequantized inputs); ``"propagated"``: the error
            of each layer's output with everything upstream quantized.
        input_fn: picks the model arguments out of each batch, e.g.
            ``lambda b: b[0]`` for ``(image, label)`` pairs.
        leaf_modules: module classes to keep as single operations when tracing.
        leaf_module_names: submodule names to keep as single operations.

    Returns:
        A :class:`Report`, one row per matched pair, in execution order. The
        statistics are running sums over every element of every batch.

    Raises:
        DataError: ``data`` is empty or a batch does not fit the models.
        TraceError: a model cannot be traced (the message says how to mark
            the culprit as a leaf).

    Example:
        >>> report = fxns.compare_activations(float_model, quant_model, batches,
        ...                                   mode="propagated")  # doctest: +SKIP
        >>> report["layer1.0.conv1"].metrics["sqnr"]  # doctest: +SKIP
        31.2
    """
    if mode not in MODES:
        raise FxnsError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    float_model = _eval_model(float_model, "float model")
    quant_model = _eval_model(quant_model, "quantized model")
    matching = match(
        float_model,
        quant_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    build = build_shadow if mode == "shadow" else build_propagated
    inst = build(matching)
    n_inputs = _n_inputs(matching.float_module)
    batches = run_batches(inst.module, data, input_fn, n_inputs)
    report = report_from(inst, batches)
    logger.info(report.summary())
    return report


def compare_variants(
    float_model: nn.Module,
    variants: Mapping[str, nn.Module],
    data: Any,
    *,
    mode: str = "propagated",
    input_fn: InputFn | None = None,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> VariantReport:
    """Compare several quantized variants of one float model on the same data.

    The variants can differ in anything: fusion (none, conv+bn, conv+bn+relu),
    qconfigs, backends. The table has one row per layer of the float model,
    so the rows line up even where one variant fused layers that another did
    not: a fused group's numbers are read on its last float layer, the layer
    whose output both variants produce.

    Args:
        float_model: the float model.
        variants: name → quantized model, in the order the columns should
            have.
        data: as for :func:`compare_activations`; it is iterated once per
            variant (a generator is read into a list first).
        mode: ``"propagated"`` (default): the error of each layer's output
            with everything upstream quantized, which compares strategies
            end to end; ``"shadow"``: each group's own error.
        input_fn: as for :func:`compare_activations`.
        leaf_modules: module classes to keep as single operations when tracing.
        leaf_module_names: submodule names to keep as single operations.

    Returns:
        A :class:`VariantReport`: ``print`` it for the side-by-side table;
        ``.reports`` holds each variant's :class:`Report`.

    Raises:
        DataError: no variants, or the data does not fit the models.

    Example:
        >>> v = fxns.compare_variants(float_model, {"fused": q1, "unfused": q2},
        ...                           batches)  # doctest: +SKIP
        >>> print(v)  # doctest: +SKIP
        >>> v.reports["fused"]["layer1.0.conv1"].metrics["sqnr"]  # doctest: +SKIP
    """
    if not variants:
        raise DataError("no variants given; pass a dict of name → quantized model")
    if mode not in MODES:
        raise FxnsError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if isinstance(data, Iterator):
        data = list(data)
    float_model = _eval_model(float_model, "float model")
    reports = {
        name: compare_activations(
            float_model,
            model,
            data,
            mode=mode,
            input_fn=input_fn,
            leaf_modules=leaf_modules,
            leaf_module_names=leaf_module_names,
        )
        for name, model in variants.items()
    }
    layers = float_layers(
        float_model, leaf_modules=leaf_modules, leaf_module_names=leaf_module_names
    )
    return VariantReport(reports, layers)


def add_loggers(
    float_model: nn.Module,
    quant_model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Copies of both models that log every matched pair (propagated error).

    Run both on the same batches, alternating, then call :func:`collect`.
    Values are compared as soon as both sides have produced them and then
    dropped, so memory does not grow with the number of batches.

    Example:
        >>> f_log, q_log = fxns.add_loggers(float_model, quant_model)  # doctest: +SKIP
        >>> for batch in batches:  # doctest: +SKIP
        ...     f_log(batch); q_log(batch)
        >>> print(fxns.collect(f_log, q_log))  # doctest: +SKIP
    """
    float_model = copy.deepcopy(_eval_model(float_model, "float model"))
    quant_model = copy.deepcopy(_eval_model(quant_model, "quantized model"))
    matching = match(
        float_model,
        quant_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    return build_logger_pair(matching)


def add_shadows(
    float_model: nn.Module,
    quant_model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> fx.GraphModule:
    """A copy of the quantized model with a float shadow next to every matched op.

    It takes the same inputs and returns the same outputs as the quantized
    model. Run it on your batches, then call :func:`collect`.

    Example:
        >>> s = fxns.add_shadows(float_model, quant_model)  # doctest: +SKIP
        >>> for batch in batches:  # doctest: +SKIP
        ...     s(batch)
        >>> print(fxns.collect(s))  # doctest: +SKIP
    """
    float_model = copy.deepcopy(_eval_model(float_model, "float model"))
    quant_model = copy.deepcopy(_eval_model(quant_model, "quantized model"))
    matching = match(
        float_model,
        quant_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    return build_shadow(matching).module


def collect(*models: nn.Module) -> Report:
    """The report of models made by :func:`add_loggers` or :func:`add_shadows`.

    Example:
        >>> print(fxns.collect(f_log, q_log))  # doctest: +SKIP
        >>> print(fxns.collect(shadow_model))  # doctest: +SKIP
    """
    states = [state_of(m) for m in models]
    if len(models) == 1 and states[0] is not None and states[0].exchange is None:
        return report_from(states[0])
    if len(models) == 2 and states[0] is not None and states[0].exchange is not None:
        inst, exchange = states[0], states[0].exchange
        if states[1] is not inst:
            raise ModelError(
                "these two logger models come from different add_loggers calls"
            )
        if exchange.pending_values():
            warnings.warn(
                "some logged values have no counterpart from the other model yet: "
                "run both logger models on the same batches",
                stacklevel=2,
            )
        return report_from(inst)
    raise ModelError(
        "collect() takes the two models returned by add_loggers, or the one "
        "returned by add_shadows"
    )


# --- running ---------------------------------------------------------------------


def run_batches(
    module: nn.Module, data: Any, input_fn: InputFn | None, n_inputs: int | None = None
) -> int:
    """Run ``module`` on every batch of ``data``; return the number of batches.

    Over more than a few batches, a progress bar shows on a terminal.
    """
    count = 0
    steps = progress(iter_batches(data), total=count_batches(data), desc="fxns")
    with torch.no_grad():
        for index, batch in enumerate(steps):
            args = batch_args(input_fn(batch) if input_fn is not None else batch, index)
            if n_inputs is not None and len(args) != n_inputs:
                raise DataError(
                    f"batch {index} gives {len(args)} model argument(s) but the model "
                    f"takes {n_inputs}; pass input_fn= to pick the inputs out of each "
                    "batch (e.g. input_fn=lambda b: b[0] for (input, label) pairs)"
                )
            try:
                module(*args)
            except FxnsError:
                raise
            except Exception as err:
                raise DataError(
                    f"the models failed on batch {index} "
                    f"({_describe(args)}): {type(err).__name__}: {_first_line(err)}"
                ) from err
            count += 1
    if count == 0:
        raise DataError("data is empty: give at least one batch")
    return count


def iter_batches(data: Any) -> Iterator[Any]:
    """The batches in ``data``: itself if it is one batch, else its items."""
    if isinstance(data, torch.Tensor | tuple | Mapping):
        yield data
        return
    if data is None or isinstance(data, str | bytes):
        raise DataError(
            f"data must be a Tensor, a tuple of model arguments, or an iterable of "
            f"batches, got {type(data).__name__}"
        )
    try:
        iterator = iter(data)
    except TypeError:
        raise DataError(
            f"data must be a Tensor, a tuple of model arguments, or an iterable of "
            f"batches, got {type(data).__name__}"
        ) from None
    yield from iterator


def batch_args(batch: Any, index: int) -> tuple[Any, ...]:
    """The positional model arguments of one batch."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, tuple | list):
        return tuple(batch)
    raise DataError(
        f"batch {index} is a {type(batch).__name__}; a batch must be a Tensor or a "
        "tuple of model arguments (use input_fn= to convert yours)"
    )


def report_from(inst: Instrumented, batches: int | None = None) -> Report:
    """Rows from the probes of an instrumented model."""
    rows = []
    for pair in inst.pairs:
        probe: Probe | None = inst.probes.get(pair.name)
        note = pair.note
        stats: ErrorStats | None = None
        if probe is None:
            note = inst.skipped.get(pair.name, "not instrumented")
        elif probe.error:
            note = probe.error
        elif probe.stats.batches == 0:
            note = "never ran"
        else:
            stats = probe.stats
        rows.append(
            _row(
                pair.name,
                pair.kind,
                pair.float_nodes,
                pair.quant_nodes,
                pair.float_ops,
                pair.quant_ops,
                stats,
                note,
            )
        )
    meta = _meta(inst.matching)
    if batches is None:
        batches = max((p.stats.batches for p in inst.probes.values()), default=0)
    meta["batches"] = batches
    return Report(rows, mode=inst.mode, meta=meta)


# --- helpers ------------------------------------------------------------------------


def _row(
    name: str,
    kind: str,
    float_nodes: tuple[str, ...],
    quant_nodes: tuple[str, ...],
    float_ops: tuple[str, ...],
    quant_ops: tuple[str, ...],
    stats: ErrorStats | None,
    note: str,
) -> LayerResult:
    return LayerResult(
        name=name,
        kind=kind,
        float_nodes=float_nodes,
        quant_nodes=quant_nodes,
        metrics=stats.metrics() if stats is not None else {},
        float_ops=float_ops,
        quant_ops=quant_ops,
        note=note,
        elements=stats.n if stats is not None else 0,
    )


def _meta(matching: Matching) -> dict[str, Any]:
    from . import __version__

    return {
        "fxns_version": __version__,
        "torch_version": torch.__version__,
        "engine": torch.backends.quantized.engine,
        "unmatched_float": list(matching.unmatched_float),
        "unmatched_quant": list(matching.unmatched_quant),
    }


def _eval_model(model: Any, role: str) -> nn.Module:
    """``model`` itself if in eval mode, else an eval-mode copy (with a warning).

    A model counts as in training mode when its own flag is set (tracing bakes
    ``if self.training`` branches into the graph) or when a module whose
    numbers depend on the flag (batch norm, dropout, QAT) has it set. Quantized
    modules ignore the flag, and ``convert_fx`` leaves it set on them.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"the {role} must be a torch.nn.Module, got {type(model).__name__}; "
            "pass the model object itself (not its state_dict or a path)"
        )
    training = [
        name or type(model).__name__
        for name, m in model.named_modules()
        if m.training and (m is model or _depends_on_training(m))
    ]
    if not training:
        return model
    warnings.warn(
        f"the {role} is in training mode ({', '.join(training[:3])}"
        f"{', ...' if len(training) > 3 else ''}); comparing an eval-mode copy. "
        "Call .eval() on it to silence this warning.",
        stacklevel=3,
    )
    return copy.deepcopy(model).eval()


def _depends_on_training(module: nn.Module) -> bool:
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase

    if type(module).__module__.startswith("torch.ao.nn.quantized"):
        return False  # inference-only modules: the flag changes nothing
    if isinstance(module, (*_TRAINING_SENSITIVE, FakeQuantizeBase)):
        return True
    dropout = getattr(module, "dropout", 0.0)
    return isinstance(dropout, float) and dropout > 0.0


_TRAINING_SENSITIVE = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.modules.instancenorm._InstanceNorm,
)


def _n_inputs(gm: fx.GraphModule) -> int | None:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if any(n.args or str(n.target).startswith("*") for n in placeholders):
        return None  # defaults or *args: any count may be valid
    return len(placeholders)


def _describe(args: tuple[Any, ...]) -> str:
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"Tensor{list(a.shape)} {str(a.dtype).removeprefix('torch.')}")
        else:
            parts.append(type(a).__name__)
    return ", ".join(parts)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
