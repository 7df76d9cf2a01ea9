"""The one-call entry points: trace, match, instrument, run, report.

:func:`compare_weights` and :func:`compare_activations` do the whole pipeline
in one call. :func:`add_loggers`, :func:`add_shadows` and :func:`collect` split
it for users who run the instrumented models in their own loop.

None of these functions changes the models it is given: instrumented models
are new ``GraphModule``s, and a model found in training mode is compared
through an eval-mode copy (with a warning).

Bad input is caught where it is first seen and raised as an
:class:`~fxns.errors.FxnsError` subclass that names the culprit and the fix:
objects that are not models, models with nothing in common, empty data,
batches that do not fit, quantized operations the selected engine cannot run
(``docs/bad-input.md`` has the full table). When a batch fails, the two models
are run again on it, one node at a time, to name the node that failed.

With ``torch.distributed`` initialised, :func:`compare_activations` and
:func:`collect` merge the statistics of every process (:mod:`fxns.distributed`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from .checks import (
    check_direction,
    check_shadowable,
    unquantized_warning,
    weight_mismatch,
    weight_mismatch_warning,
)
from .distributed import check_in, group_for, reduce_stats
from .errors import (
    ArgumentError,
    DataError,
    EngineError,
    FxnsError,
    InstrumentError,
    ModelError,
)
from .instrument import (
    Instrumented,
    build_logger_pair,
    build_propagated,
    build_shadow,
    state_of,
)
from .layout import check_layout
from .match import Matching, Pair, match
from .ops import element_name
from .progress import count_batches, progress
from .report import LayerResult, Report, VariantReport
from .stats import ErrorStats
from .variants import float_layers
from .weights import WeightPair, weight_pairs

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

    Raises:
        ModelError: a model is not an ``nn.Module``, or nothing in the
            quantized model matches the float model.
        TraceError: a model cannot be traced.

    Example:
        >>> r = fxns.compare_weights(float_model, quant_model)  # doctest: +SKIP
        >>> print(r.table(sort_by="sqnr", top=5))  # doctest: +SKIP
    """
    float_model = _eval_model(float_model, "float model")
    quant_model = _eval_model(quant_model, "quantized model")
    matching = _match(float_model, quant_model, leaf_modules, leaf_module_names)
    rows = []
    for w in _distinct_weights(matching):
        stats = ErrorStats()
        note = w.note
        try:
            if w.quant_weight is not None:
                stats.update(w.float_weight, w.quant_weight)
        except ValueError as err:
            note = f"not compared: {err}"
        rows.append(
            _row(
                w.name,
                w.pair.kind,
                w.pair.float_nodes,
                w.pair.quant_nodes,
                w.pair.float_ops,
                w.pair.quant_ops,
                stats if not note.startswith("not compared") else None,
                note,
            )
        )
    _warn_nonfinite(rows)
    report = Report(rows, mode="weights", meta=_meta(matching, 0, rows))
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
    distributed: bool = True,
    layout: str = "auto",
    keep_tensors: bool | Sequence[str] = False,
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
        distributed: when ``torch.distributed`` is initialised with several
            processes, merge the statistics of all of them (each passing its
            own share of the data) into one report, the same in every
            process. ``False`` keeps this process's statistics only.
        layout: the memory layout the float side computes in, a matter of
            speed only (:mod:`fxns.layout`): ``"auto"`` tries channels-last
            and contiguous on the first batches and keeps the faster;
            ``"contiguous"`` or ``"channels_last"`` fixes it, for numbers
            that are the same to the last bit from run to run.
        keep_tensors: row names (or ``True`` for every row) whose compared
            values to keep, for a closer look: ``report.tensors[name]`` is
            then a list of ``(float value, quantized value as float)``
            copies, one per batch. Off by default: kept values make memory
            grow with every batch, which the running sums never do.

    Returns:
        A :class:`Report`, one row per matched pair, in execution order. The
        statistics are running sums over every element of every batch; NaN
        and Inf values are left out of them and counted per row.

    Raises:
        DataError: ``data`` is empty or a batch does not fit the float model.
        ModelError: a model is not an ``nn.Module``, nothing matches, or the
            quantized model fails on a batch the float model runs on.
        EngineError: the quantized engine cannot run one of the quantized
            model's operations.
        TraceError: a model cannot be traced (the message says how to mark
            the culprit as a leaf).
        DistributedError: another process of the group failed, or compared
            other models.

    Example:
        >>> report = fxns.compare_activations(float_model, quant_model, batches,
        ...                                   mode="propagated")  # doctest: +SKIP
        >>> report["layer1.0.conv1"].metrics["sqnr"]  # doctest: +SKIP
        31.2
    """
    _check_mode(mode)
    _check_input_fn(input_fn)
    check_layout(layout)
    _check_keep_tensors(keep_tensors)
    return _compare(
        float_model,
        quant_model,
        data,
        mode=mode,
        input_fn=input_fn,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
        distributed=distributed,
        role="quantized model",
        layout=layout,
        keep_tensors=keep_tensors,
    )


def _compare(
    float_model: nn.Module,
    quant_model: nn.Module,
    data: Any,
    *,
    mode: str,
    input_fn: InputFn | None,
    leaf_modules: Sequence[type[nn.Module]],
    leaf_module_names: Sequence[str],
    distributed: bool,
    role: str,
    layout: str = "auto",
    keep_tensors: bool | Sequence[str] = False,
) -> Report:
    """:func:`compare_activations`, its options checked; ``role`` names the
    quantized model in messages ("quantized model 'x86'")."""
    group = group_for(distributed)
    try:
        float_model = _eval_model(float_model, "float model")
        quant_model = _eval_model(quant_model, role)
        matching = _match(
            float_model,
            quant_model,
            leaf_modules,
            leaf_module_names,
            mode=mode,
            role=role,
        )
        build = build_shadow if mode == "shadow" else build_propagated
        inst = build(matching, layout, _kept_names(matching, keep_tensors))
        batches = run_batches(
            inst.module,
            data,
            input_fn,
            _n_inputs(matching.float_module),
            matching=matching,
            allow_empty=group is not None,
            mode=mode,
        )
    except Exception as err:
        if group is not None:
            # Let the other processes know before raising, so that they
            # raise too instead of waiting for this one forever.
            check_in(group, (), {}, 0, failure=err)
        raise
    report = report_from(inst, batches, group=group)
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
    distributed: bool = True,
    layout: str = "auto",
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
        distributed: as for :func:`compare_activations`.
        layout: as for :func:`compare_activations`.

    Returns:
        A :class:`VariantReport`: ``print`` it for the side-by-side table;
        ``.reports`` holds each variant's :class:`Report`.

    Raises:
        ModelError: ``variants`` is not a non-empty mapping of name to
            ``nn.Module``, or as for :func:`compare_activations`.
        DataError, EngineError, TraceError: as for
            :func:`compare_activations`.

    Example:
        >>> v = fxns.compare_variants(float_model, {"fused": q1, "unfused": q2},
        ...                           batches)  # doctest: +SKIP
        >>> print(v)  # doctest: +SKIP
        >>> v.reports["fused"]["layer1.0.conv1"].metrics["sqnr"]  # doctest: +SKIP
    """
    if not isinstance(variants, Mapping):
        raise ModelError(
            f"variants must be a dict of name → quantized model, got "
            f"{type(variants).__name__}; e.g. variants={{'x86': q1, 'qnnpack': q2}}"
        )
    if not variants:
        raise ModelError("no variants given; pass a dict of name → quantized model")
    for name, model in variants.items():
        if not isinstance(model, nn.Module):
            raise ModelError(
                f"variant {name!r} is a {type(model).__name__}, not a "
                "torch.nn.Module; pass the quantized model object itself"
            )
    _check_mode(mode)
    _check_input_fn(input_fn)
    check_layout(layout)
    if isinstance(data, Iterator):
        data = list(data)
    # Once here, so that a float model in training mode warns once, not once
    # per variant.
    float_model = _eval_model(float_model, "float model")
    reports = {
        name: _compare(
            float_model,
            model,
            data,
            mode=mode,
            input_fn=input_fn,
            leaf_modules=leaf_modules,
            leaf_module_names=leaf_module_names,
            distributed=distributed,
            role=f"quantized model {name!r}",
            layout=layout,
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

    Raises:
        ModelError: a model is not an ``nn.Module``, cannot be copied, or
            nothing in the quantized model matches the float model.
        EngineError: copying the quantized model repacks its weights for the
            selected quantized engine, and that engine cannot.
        TraceError: a model cannot be traced.

    Example:
        >>> f_log, q_log = fxns.add_loggers(float_model, quant_model)  # doctest: +SKIP
        >>> for batch in batches:  # doctest: +SKIP
        ...     f_log(batch); q_log(batch)
        >>> print(fxns.collect(f_log, q_log))  # doctest: +SKIP
    """
    float_model = _own_copy(_eval_model(float_model, "float model"), "float model")
    quant_model = _own_copy(
        _eval_model(quant_model, "quantized model"), "quantized model"
    )
    matching = _match(
        float_model, quant_model, leaf_modules, leaf_module_names, mode="propagated"
    )
    return build_logger_pair(matching)


def add_shadows(
    float_model: nn.Module,
    quant_model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
    layout: str = "auto",
) -> fx.GraphModule:
    """A copy of the quantized model with a float shadow next to every matched op.

    It takes the same inputs and returns the same outputs as the quantized
    model. Run it on your batches, then call :func:`collect`. ``layout`` is
    as for :func:`compare_activations`.

    Raises:
        ModelError, EngineError, TraceError: as for :func:`add_loggers`.

    Example:
        >>> s = fxns.add_shadows(float_model, quant_model)  # doctest: +SKIP
        >>> for batch in batches:  # doctest: +SKIP
        ...     s(batch)
        >>> print(fxns.collect(s))  # doctest: +SKIP
    """
    float_model = _own_copy(_eval_model(float_model, "float model"), "float model")
    quant_model = _own_copy(
        _eval_model(quant_model, "quantized model"), "quantized model"
    )
    check_layout(layout)
    matching = _match(
        float_model, quant_model, leaf_modules, leaf_module_names, mode="shadow"
    )
    return build_shadow(matching, layout).module


def collect(*models: nn.Module, distributed: bool = True) -> Report:
    """The report of models made by :func:`add_loggers` or :func:`add_shadows`.

    Each call reports everything run so far; it changes nothing, so calling it
    again after more batches gives a report of all of them.

    Args:
        models: the two models from :func:`add_loggers`, or the one from
            :func:`add_shadows`.
        distributed: as for :func:`compare_activations`: with
            ``torch.distributed`` initialised, every process calls
            ``collect`` and gets the report of all their batches.

    Raises:
        ModelError: the models were not made by fxns (or by different calls).
        DataError: no batch has been run through them yet.

    Example:
        >>> print(fxns.collect(f_log, q_log))  # doctest: +SKIP
        >>> print(fxns.collect(shadow_model))  # doctest: +SKIP
    """
    for model in models:
        if not isinstance(model, nn.Module):
            raise ModelError(
                f"collect() takes models, got a {type(model).__name__}; pass the "
                "two models returned by add_loggers, or the one from add_shadows"
            )
    group = group_for(distributed)
    states = [state_of(m) for m in models]
    if len(models) == 1 and states[0] is not None and states[0].exchange is None:
        return report_from(states[0], group=group, require_batches=True)
    if len(models) == 2 and states[0] is not None and states[0].exchange is not None:
        inst, exchange = states[0], states[0].exchange
        if states[1] is not inst:
            raise ModelError(
                "these two logger models come from different add_loggers calls"
            )
        pending = exchange.pending_values()
        if pending:
            _warn(
                "some logged values have no counterpart from the other model yet: "
                "run both logger models on the same batches"
            )
        return report_from(inst, group=group, require_batches=not pending)
    raise ModelError(
        "collect() takes the two models returned by add_loggers, or the one "
        "returned by add_shadows"
    )


# --- running ---------------------------------------------------------------------


EMPTY_DATA = "data is empty: give at least one batch"

# The advice of data errors about converting batches with input_fn, which
# the command line words in its own terms (see fxns.cli).
PICK_INPUTS = (
    "pass input_fn= to pick the inputs out of each batch (e.g. "
    "input_fn=lambda b: b[0] for (input, label) pairs)"
)
CONVERT_BATCHES = "or pass input_fn= to convert each batch"
CONVERT_YOURS = "(use input_fn= to convert yours)"
INPUT_FN_CONTRACT = "it must return the model's argument(s) for every batch"


def run_batches(
    module: nn.Module,
    data: Any,
    input_fn: InputFn | None,
    n_inputs: int | None = None,
    *,
    matching: Matching | None = None,
    allow_empty: bool = False,
    mode: str = "",
) -> int:
    """Run ``module`` on every batch of ``data``; return the number of batches.

    Over more than a few batches, a progress bar shows on a terminal.

    Args:
        module: the instrumented model.
        data: as for :func:`compare_activations`.
        input_fn: as for :func:`compare_activations`.
        n_inputs: the number of arguments the models take, if fixed.
        matching: the matching ``module`` was built from; when a batch fails,
            its two models are run on the batch to name the failing node.
        allow_empty: return 0 for empty data instead of raising.
        mode: the mode ``module`` was built for, for messages.

    Raises:
        DataError, ModelError, EngineError, InstrumentError: see
            :func:`diagnose`.
    """
    # GraphModule.__call__ prints the generated code of a failing line to
    # stderr; fxns reports failures itself, naming the node.
    forward = module.forward if isinstance(module, fx.GraphModule) else module
    count = 0
    steps = progress(iter_batches(data), total=count_batches(data), desc="fxns")
    with torch.no_grad():
        for index, batch in enumerate(steps):
            args = model_args(
                batch, index, input_fn, n_inputs, whole_data=isinstance(data, tuple)
            )
            try:
                forward(*args)
            except FxnsError:
                raise
            except Exception as err:
                raise diagnose(matching, args, index, err, mode) from err
            count += 1
    if count == 0 and not allow_empty:
        raise DataError(EMPTY_DATA)
    return count


def model_args(
    batch: Any,
    index: int,
    input_fn: InputFn | None,
    n_inputs: int | None,
    *,
    whole_data: bool = False,
) -> tuple[Any, ...]:
    """The model arguments of one batch, checked against the model's arity.

    ``whole_data``: the batch is the whole of the data (a tuple passed as
    ``data``), which may be meant as a sequence of batches.

    Raises:
        DataError: ``input_fn`` fails, the batch is not a tensor or tuple,
            gives the wrong number of arguments, or is empty.
    """
    args = _model_args(batch, index, input_fn)
    if n_inputs is not None and len(args) != n_inputs:
        advice = (
            "a tuple is one batch of positional arguments; pass a list of batches"
            if whole_data and input_fn is None and _looks_like_batches(args)
            else PICK_INPUTS
        )
        raise DataError(
            f"batch {index} gives {len(args)} model argument(s) but the model "
            f"takes {n_inputs}; {advice}"
        )
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if tensors and all(t.numel() == 0 for t in tensors):
        raise DataError(
            f"batch {index} is empty ({_describe(args)}); drop empty "
            "batches from the data"
        )
    return args


def _looks_like_batches(args: tuple[Any, ...]) -> bool:
    """Whether a tuple of model arguments looks like several batches of one
    input: tensors, all of the same shape."""
    return (
        len(args) > 1
        and all(isinstance(a, torch.Tensor) for a in args)
        and len({a.shape for a in args}) == 1
    )


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


def batch_args(
    batch: Any, index: int, what: str = "batch {index} is"
) -> tuple[Any, ...]:
    """The positional model arguments of one batch."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, tuple | list):
        return tuple(batch)
    raise DataError(
        f"{what.format(index=index)} a {type(batch).__name__}; a batch must be a "
        f"Tensor or a tuple of model arguments {CONVERT_YOURS}"
    )


def diagnose(
    matching: Matching | None,
    args: tuple[Any, ...],
    index: int,
    err: Exception,
    mode: str = "",
) -> FxnsError:
    """The error to raise when the instrumented model failed on a batch.

    Runs the float model, then the quantized one, on the batch one node at a
    time (``torch.fx.Interpreter``) to find which of them fails and where:

    - the float model fails: the batch does not fit (:class:`DataError`);
    - a quantized op fails for the engine: :class:`EngineError`;
    - only the quantized model fails: :class:`ModelError`;
    - neither fails on its own: the instrumented model is at fault
      (:class:`InstrumentError`).

    This costs one more forward pass of each model, on failure only.
    """
    batch = f"batch {index} ({_describe(args)})"
    roles = (
        (
            ("float model", matching.float_module),
            ("quantized model", matching.quant_module),
        )
        if matching is not None
        else ()
    )
    for role, gm in roles:
        found = _failing_node(gm, args)
        if found is None:
            continue
        node, cause = found
        where = _where(gm, node)
        what = f"{type(cause).__name__}: {_first_line(cause)}"
        if _is_engine_error(cause):
            return _engine_error(f"the {role}'s {where}", what)
        if role == "float model":
            return DataError(
                f"{batch} does not fit the float model: its {where} fails with "
                f"{what}. Give batches of the shape and dtype the model takes, "
                f"{CONVERT_BATCHES}"
            )
        assert matching is not None
        unquantized = _FLOAT_INTO_QUANTIZED.search(str(cause))
        advice = "Check that the quantized model runs on its own on this batch"
        if unquantized:
            what = f"{type(cause).__name__}: {unquantized.group(0)}"
            advice = (
                f"{unquantized.group(1)} got a float tensor where it needs a "
                "quantized one: put a QuantStub (eager mode) or "
                "quantize_per_tensor before it"
            )
        if matching.unmatched_float or matching.unmatched_quant:
            advice += f"; is it made from this float model? ({matching.summary()})"
        return ModelError(
            f"the quantized model fails on {batch} although the float model runs "
            f"on it: its {where} fails with {what}. {advice}"
        )
    what = f"{type(err).__name__}: {_first_line(err)}"
    if _is_engine_error(err):
        return _engine_error("an operation of the quantized model", what)
    if matching is None:
        return DataError(f"the models failed on {batch}: {what}")
    other = {"shadow": "propagated", "propagated": "shadow"}.get(mode)
    meanwhile = f"compare in {other} mode meanwhile" if other else "try the other mode"
    fault = f"this is a fault in fxns: {meanwhile}, and report it with the two models"
    # Where the models do not line up, a shadow layer can fail on its
    # twin's inputs although neither model fails on its own.
    suspect = (
        matching.summary()
        if matching.unmatched_float or matching.unmatched_quant
        else weight_mismatch(matching)
    )
    if suspect:
        fault = (
            "check that the quantized model is made from this float model "
            f"({suspect}); if it is, {fault}"
        )
    instrumented = "the instrumented model" + (f" ({mode} mode)" if mode else "")
    return InstrumentError(
        f"{instrumented} failed on {batch} although both models run on it on "
        f"their own: {what}. {fault[0].upper()}{fault[1:]}"
    )


def report_from(
    inst: Instrumented,
    batches: int | None = None,
    *,
    group: Any = None,
    require_batches: bool = False,
) -> Report:
    """Rows from the probes of an instrumented model.

    A pair whose value is a tuple (an LSTM's ``(output, (h_n, c_n))``) gets
    one row per tensor in it, named ``<pair>[<element>]`` (``rnn[h_n]``).

    Args:
        inst: the instrumented model.
        batches: how many batches it ran (default: the most any probe saw).
        group: a ``torch.distributed`` process group to merge the statistics
            of (see :mod:`fxns.distributed`), or ``None``.
        require_batches: raise :class:`DataError` if nothing has run.
    """
    # Tuple values (LSTM outputs) keep one set of sums per element.
    stats: dict[str, ErrorStats] = {}
    for name, probe in inst.probes.items():
        stats[name] = probe.stats
        for path in probe.elements:
            stats[_element_key(name, path)] = probe.elements[path]
    notes = {name: probe.error for name, probe in inst.probes.items() if probe.error}
    if batches is None:
        batches = max((s.batches for s in stats.values()), default=0)
    if inst.input_check is not None:
        # Not a pair: merged across processes with the others, read below.
        stats[_INPUTS_KEY] = inst.input_check.stats
    processes = 1
    if group is not None:
        info = check_in(group, [p.name for p in inst.pairs], notes, batches)
        notes, batches, processes = info.notes, sum(info.batches), len(info.batches)
        stats = reduce_stats(stats, group)
    inputs = stats.pop(_INPUTS_KEY, None)
    if batches == 0 and (require_batches or group is not None) and stats:
        raise DataError(
            EMPTY_DATA if not require_batches else _nothing_compared(inst, notes)
        )

    rows = []
    for pair in inst.pairs:
        note = pair.note
        pair_stats: ErrorStats | None = None
        if pair.name not in stats:
            note = inst.skipped.get(pair.name, "not instrumented")
        elif pair.name in notes:
            note = notes[pair.name]
        elif inst.probes[pair.name].elements:
            paths = sorted(inst.probes[pair.name].elements)
            elements = {p: stats[_element_key(pair.name, p)] for p in paths}
            rows.extend(_element_rows(pair, elements))
            continue
        elif stats[pair.name].batches == 0:
            note = "never ran"
        else:
            pair_stats = stats[pair.name]
        rows.append(
            _row(
                pair.name,
                pair.kind,
                pair.float_nodes,
                pair.quant_nodes,
                pair.float_ops,
                pair.quant_ops,
                pair_stats,
                note,
            )
        )
    _warn_nonfinite(rows)
    meta = _meta(inst.matching, batches, rows)
    meta["processes"] = processes
    if inputs is not None and inputs.nonfinite_float:
        meta["nonfinite_inputs"] = inputs.nonfinite_float
        _warn(
            f"the model inputs hold {inputs.nonfinite_float} NaN or Inf "
            "value(s). In shadow mode every float layer is fed what the "
            "quantized model computed, and its quantize step made those values "
            "finite, so the rows fed by the inputs measure them as their own "
            "error. Remove them from the data, or use mode='propagated', which "
            "counts them per layer."
        )
    tensors = {name: p.kept for name, p in inst.probes.items() if p.keep}
    return Report(rows, mode=inst.mode, meta=meta, tensors=tensors)


# The input check's entry among the statistics (no pair has this name).
_INPUTS_KEY = "\0inputs"


# --- helpers ------------------------------------------------------------------------


def _distinct_weights(matching: Matching) -> Iterator[WeightPair]:
    """:func:`weight_pairs`, each weight once: a module called several times
    (pairs ``c``, ``c:1``, ...) holds one weight, listed under its first call
    with a note naming the others."""
    weights = list(weight_pairs(matching))
    calls: dict[tuple[str, str], list[WeightPair]] = {}
    for w in weights:
        calls.setdefault((_CALL_SUFFIX.sub("", w.pair.name), w.element), []).append(w)
    for w in weights:
        same = [
            other
            for other in calls[_CALL_SUFFIX.sub("", w.pair.name), w.element]
            if _same_weight(w, other)
        ]
        if len(same) < 2:
            yield w
        elif same[0] is w:
            names = ", ".join(other.pair.name for other in same)
            note = (
                f"the module serves {len(same)} calls ({names}); its weight is "
                "listed once"
            )
            yield dataclasses.replace(w, note=_join(w.note, note))


# The ":<k>" of the k-th call of a module called several times ("c:1").
_CALL_SUFFIX = re.compile(r":\d+$")


def _same_weight(a: WeightPair, b: WeightPair) -> bool:
    return (
        a.float_weight.shape == b.float_weight.shape
        and torch.equal(a.float_weight, b.float_weight)
        and (a.quant_weight is None) == (b.quant_weight is None)
        and (
            a.quant_weight is None
            or b.quant_weight is None
            or (
                a.quant_weight.shape == b.quant_weight.shape
                and torch.equal(a.quant_weight, b.quant_weight)
            )
        )
    )


def _nothing_compared(inst: Instrumented, notes: Mapping[str, str]) -> str:
    """Why no value was compared, for :func:`collect`."""
    if not notes:
        return (
            "nothing has run through these models yet: call them on your "
            "batches before collect()"
        )
    name, note = next(iter(notes.items()))
    if inst.exchange is None:
        return (
            f"the shadow model ran, but no value could be compared (at {name!r}: "
            f"{note.removeprefix('not compared: ')})"
        )
    return (
        "both logger models ran, but not on the same batches, so their values "
        f"could not be compared (at {name!r}: "
        f"{note.removeprefix('not compared: ')}); make new ones with add_loggers "
        "and run both on the same batches, in the same order"
    )


def _element_key(name: str, path: tuple[int, ...]) -> str:
    return f"{name}\x00{path}"


def _element_rows(
    pair: Pair, elements: dict[tuple[int, ...], ErrorStats]
) -> list[LayerResult]:
    kind = pair.kind.split("+")[-1]
    return [
        _row(
            f"{pair.name}[{element_name(kind, path)}]",
            pair.kind,
            pair.float_nodes,
            pair.quant_nodes,
            pair.float_ops,
            pair.quant_ops,
            stats,
            pair.note,
        )
        for path, stats in elements.items()
    ]


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
    metrics: dict[str, float] = {}
    if stats is not None:
        seen = stats.n + stats.excluded
        if stats.n == 0:
            # Metrics of nothing would be NaN: say why there are none.
            note = _join(
                note,
                f"not compared: every one of the {seen} value pairs has a NaN or Inf"
                if stats.excluded
                else "not compared: the values are empty",
            )
        else:
            metrics = stats.metrics()
            if stats.excluded:
                note = _join(
                    note,
                    f"metrics over the {stats.n} of {seen} value pairs "
                    "with no NaN or Inf",
                )
    return LayerResult(
        name=name,
        kind=kind,
        float_nodes=float_nodes,
        quant_nodes=quant_nodes,
        metrics=metrics,
        float_ops=float_ops,
        quant_ops=quant_ops,
        note=note,
        elements=stats.n if stats is not None else 0,
        nonfinite_float=stats.nonfinite_float if stats is not None else 0,
        nonfinite_quant=stats.nonfinite_quant if stats is not None else 0,
    )


def _join(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def _meta(matching: Matching, batches: int, rows: list[LayerResult]) -> dict[str, Any]:
    """What a report needs to say about how it was made (see Report.meta)."""
    from . import __version__

    return {
        "fxns_version": __version__,
        "torch_version": torch.__version__,
        "engine": torch.backends.quantized.engine,
        # Batches run, and element pairs compared over all rows and batches.
        "batches": batches,
        "elements": sum(row.elements for row in rows),
        "unmatched_float": list(matching.unmatched_float),
        "unmatched_quant": list(matching.unmatched_quant),
    }


def _warn_nonfinite(rows: list[LayerResult]) -> None:
    hit = [r for r in rows if r.nonfinite_float or r.nonfinite_quant]
    if not hit:
        return
    names = ", ".join(r.name for r in hit[:3]) + (", ..." if len(hit) > 3 else "")
    n_float = sum(r.nonfinite_float for r in hit)
    n_quant = sum(r.nonfinite_quant for r in hit)
    _warn(
        f"NaN or Inf values in {len(hit)} layer(s) ({names}): {n_float} on the "
        f"float side, {n_quant} on the quantized side. Their metrics cover the "
        "finite values only; the report's 'nan/inf f/q' column counts them. "
        "Check the inputs, or the first of these layers."
    )


def _match(
    float_model: nn.Module,
    quant_model: nn.Module,
    leaf_modules: Sequence[type[nn.Module]],
    leaf_module_names: Sequence[str],
    *,
    mode: str = "",
    role: str = "quantized model",
) -> Matching:
    """:func:`match`, checked: the models are the right way round
    (:mod:`fxns.checks`), something matches, and for a comparison of
    activations (``mode``), the float layers can run in that mode. Warns when
    the quantized model has no quantized operation, and for activations,
    when its weights are not the float model's."""
    matching = match(
        float_model,
        quant_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
    )
    check_direction(matching)
    if matching.pairs:
        if mode == "shadow":
            check_shadowable(matching)
        warning = unquantized_warning(matching, role)
        if not warning and mode:
            warning = weight_mismatch_warning(matching, role)
        if warning:
            _warn(warning)
        return matching
    counts = []
    advice = []
    for role, og in (
        ("float model", matching.float_graph),
        ("quantized model", matching.quant_graph),
    ):
        assert og is not None
        n = sum(1 for _ in og.op_nodes())
        counts.append(f"{n} in the {role} ({type(og.gm).__name__})")
        if n == 0:
            none = _returns_none(og.gm)
            advice.append(
                f"the {role} has no operations torch.fx can see"
                + (
                    " and returns None (quantization drops computations whose "
                    "results are unused): return the values to compare"
                    if none
                    else ""
                )
            )
    if not advice:
        advice.append(
            "is the quantized model made from this float model? Pass the float "
            "model it was quantized from"
        )
    raise ModelError(
        f"no operation of the quantized model matches one of the float model "
        f"(operations: {', '.join(counts)}); {'; '.join(advice)}"
    )


def _returns_none(gm: fx.GraphModule) -> bool:
    outputs = [n for n in gm.graph.nodes if n.op == "output"]
    return all(n.args == (None,) for n in outputs)


def _check_mode(mode: object) -> None:
    if mode not in MODES:
        raise ArgumentError(
            f"unknown mode {mode!r}; use one of {', '.join(map(repr, MODES))}"
        )


def _check_keep_tensors(keep: object) -> None:
    if isinstance(keep, bool):
        return
    if isinstance(keep, str) or not (
        isinstance(keep, Sequence | set | frozenset)
        and all(isinstance(name, str) for name in keep)
    ):
        raise ArgumentError(
            f"keep_tensors must be True or a list of row names, got {keep!r}; "
            "e.g. keep_tensors=['layer1.0.conv1']"
        )


def _kept_names(matching: Matching, keep: bool | Sequence[str]) -> frozenset[str]:
    """The pair names whose values to keep; unknown names are an error."""
    names = [p.name for p in matching.pairs]
    if isinstance(keep, bool):
        return frozenset(names if keep else ())
    unknown = [name for name in keep if name not in set(names)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ArgumentError(
            f"keep_tensors names {unknown[0]!r}, which is not a row of this "
            f"comparison{hint} (fxns.match(...).pairs lists the rows)"
        )
    return frozenset(keep)


def _check_input_fn(input_fn: object) -> None:
    if input_fn is not None and not callable(input_fn):
        raise ArgumentError(
            f"input_fn must be a function from a batch to the model's arguments, "
            f"got a {type(input_fn).__name__}; e.g. input_fn=lambda b: b[0]"
        )


def _model_args(batch: Any, index: int, input_fn: InputFn | None) -> tuple[Any, ...]:
    if input_fn is None:
        return batch_args(batch, index)
    try:
        picked = input_fn(batch)
    except Exception as err:
        raise DataError(
            f"input_fn failed on batch {index} ({_describe_value(batch)}): "
            f"{type(err).__name__}: {_first_line(err)}; {INPUT_FN_CONTRACT}"
        ) from err
    return batch_args(picked, index, "input_fn returned for batch {index}")


def _own_copy(model: nn.Module, role: str) -> nn.Module:
    """A deep copy of ``model``, with an error that names what cannot be copied.

    Copying a quantized module repacks its weights for the selected quantized
    engine, which fails if that engine cannot run the module.
    """
    try:
        return copy.deepcopy(model)
    except Exception as err:
        culprit = _first_uncopyable(model)
        where = (
            f"its module '{culprit}' ({type(model.get_submodule(culprit)).__name__})"
            if culprit is not None
            else "it"
        )
        what = f"{type(err).__name__}: {_first_line(err)}"
        if _is_engine_error(err):
            raise _engine_error(
                f"the {role}'s {where.removeprefix('its ')}", what
            ) from err
        raise ModelError(
            f"fxns works on a copy of the {role}, and copy.deepcopy fails on "
            f"{where}: {what}. Make the model deep-copyable (or, for a model in "
            "training mode, call .eval() on it so that no copy is needed)"
        ) from err


def _first_uncopyable(model: nn.Module) -> str | None:
    """The innermost public submodule that ``copy.deepcopy`` fails on."""
    path: list[str] = []
    module = model
    while True:
        for name, child in module.named_children():
            if name.startswith("_"):
                continue  # internals such as _packed_params: name their owner
            try:
                copy.deepcopy(child)
            except Exception:
                path.append(name)
                module = child
                break
        else:
            return ".".join(path) or None


def _eval_model(model: Any, role: str) -> nn.Module:
    """``model`` itself if in eval mode, else an eval-mode copy (with a warning).

    A prepared model (observers or fake-quants) is always used through a copy
    whose observers are switched off (see :func:`_with_observers_frozen`).

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
    if training:
        _warn(
            f"the {role} is in training mode ({', '.join(training[:3])}"
            f"{', ...' if len(training) > 3 else ''}); comparing an eval-mode "
            "copy. Call .eval() on it to silence this warning."
        )
        return _with_observers_frozen(_own_copy(model, role).eval(), role, True)
    return _with_observers_frozen(model, role, False)


def _with_observers_frozen(model: nn.Module, role: str, copied: bool) -> nn.Module:
    """A prepared model (observers, fake-quants) as a copy whose observers
    record nothing: running it must not change the user's statistics, and its
    fake-quants keep the scales they were calibrated to for every batch."""
    from torch.ao.quantization import disable_observer
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    if not any(isinstance(m, ObserverBase | FakeQuantizeBase) for m in model.modules()):
        return model
    if not copied:
        model = _own_copy(model, role)
    # Fake-quants stop observing; bare observers still record, into the copy.
    model.apply(disable_observer)
    return model


def _depends_on_training(module: nn.Module) -> bool:
    # Fake-quants compute the same in either mode (what they do in training,
    # observing, fxns switches off anyway), and a QAT conv with frozen batch
    # norm leaves its weight fake-quant in training mode on ``.eval()``.
    if type(module).__module__.startswith("torch.ao.nn.quantized"):
        return False  # inference-only modules: the flag changes nothing
    if isinstance(module, _TRAINING_SENSITIVE):
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
    return ", ".join(_describe_value(a) for a in args)


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, tuple | list) and len(value) <= 4:
        inner = ", ".join(_describe_value(v) for v in value)
        return f"{type(value).__name__}({inner})"
    return type(value).__name__


class _NodeTracker(fx.Interpreter):
    """Runs a GraphModule node by node, remembering the node being run."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.extra_traceback = False
        self.current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        return super().run_node(n)


def _failing_node(
    gm: fx.GraphModule, args: tuple[Any, ...]
) -> tuple[fx.Node, Exception] | None:
    tracker = _NodeTracker(gm)
    try:
        with torch.no_grad():
            tracker.run(*args)
    except Exception as err:
        if tracker.current is not None:
            return tracker.current, err
    return None


def _where(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return f"module '{node.target}' ({type(module).__name__})"
    if node.op == "call_function":
        target = node.target
        name = (
            str(target)
            if isinstance(target, torch._ops.OpOverloadPacket | torch._ops.OpOverload)
            else getattr(target, "__name__", str(target))
        )
        return f"node '{node.name}' ({name})"
    if node.op == "call_method":
        return f"node '{node.name}' (.{node.target}())"
    return f"node '{node.name}'"


# Messages of quantized kernels that the selected engine cannot run.
_ENGINE_FAILURE = re.compile(
    r"NoQEngine|Didn't find engine|not supported by (?:QNNPACK|ONEDNN|FBGEMM|X86)"
    r"|(?:QNNPACK|ONEDNN|FBGEMM|X86) only supports",
    re.IGNORECASE,
)


# A quantized kernel called with a float tensor.
_FLOAT_INTO_QUANTIZED = re.compile(
    r"Could not run '(quantized::\w+)' with arguments from the 'CPU' backend"
)


def _is_engine_error(err: BaseException) -> bool:
    return bool(_ENGINE_FAILURE.search(str(err)))


def _engine_error(where: str, what: str) -> EngineError:
    engine = torch.backends.quantized.engine
    others = [e for e in torch.backends.quantized.supported_engines if e != engine]
    return EngineError(
        f"{where} cannot run on the '{engine}' quantized engine: {what}. Set "
        "torch.backends.quantized.engine to the engine the model was quantized "
        f"for before calling fxns (this build also has {', '.join(others)})"
    )


def _warn(message: str) -> None:
    """``warnings.warn`` pointing at the first caller outside fxns."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, UserWarning, stacklevel=level)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _first_line(err: BaseException, limit: int = 240) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
