"""Models to ``GraphModule``s: step 1 of the pipeline, and the leaf policy.

A ``GraphModule`` (from ``prepare_fx``, ``convert_fx``,
``convert_to_reference_fx`` or the user's own trace) is used as it is, never
traced again. Any other ``nn.Module`` is traced with :class:`LeafTracer`,
which keeps as single operations (leaves):

- every module of ``torch.nn`` and ``torch.ao.nn`` except containers, so that
  quantized, fused, QAT, reference and dynamic-quantized modules are leaves;
- observers, fake-quant modules and ``QuantStub``/``DeQuantStub``;
- the classes in ``leaf_modules`` and the submodules named in
  ``leaf_module_names`` (for code ``torch.fx`` cannot trace, such as an ``if``
  that depends on the data). These are the options ``prepare_fx`` takes as
  ``PrepareCustomConfig.set_non_traceable_module_classes`` and
  ``set_non_traceable_module_names``; :func:`leaves_of` reads them from a
  ``PrepareCustomConfig``.

Eager-mode ``FloatFunctional``/``QFunctional`` modules are used through their
methods (``self.skip_add.add(x, y)``), which the tracer runs through into
``torch.add`` (or ``torch.ops.quantized.add``) and the module's
``activation_post_process``. The tracer marks every node made inside such a
call with :data:`CALL_SITE`: the module's path and the index of the call, so
that each call reads as its own layer, named after its module.

Tracing never changes the model: the returned ``GraphModule`` refers to the
model's own submodules and parameters, and nothing is written back.
"""

from __future__ import annotations

import difflib
import functools
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from types import CodeType, FrameType
from typing import Any

from torch import fx, nn

from .errors import ArgumentError, ModelError, TraceError

__all__ = ["CALL_SITE", "LeafTracer", "check_leaf_options", "leaves_of", "trace"]

logger = logging.getLogger(__name__)

# ``node.meta`` key: ``(module path, call index)`` of the FloatFunctional or
# QFunctional method call that made the node.
CALL_SITE = "fxns_call_site"

# How far up the Python stack a node's creation is traced back to a
# FloatFunctional method: the method, torch's function, the Proxy dispatch
# and the tracer sit within a few frames of each other.
_MAX_CALL_DEPTH = 16


class LeafTracer(fx.Tracer):
    """A ``torch.fx.Tracer`` with fxns's leaf policy.

    Args:
        leaf_modules: module classes to keep as leaves.
        leaf_module_names: qualified names of submodules to keep as leaves.

    Example:
        >>> tracer = LeafTracer(leaf_modules=[torch.nn.Sequential])
        >>> graph = tracer.trace(torch.nn.Sequential(torch.nn.ReLU()))
        >>> [n.op for n in graph.nodes]
        ['placeholder', 'call_module', 'output']
    """

    def __init__(
        self,
        leaf_modules: Iterable[type[nn.Module]] = (),
        leaf_module_names: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.leaf_modules = tuple(leaf_modules)
        self.leaf_module_names = frozenset(leaf_module_names)
        # Qualified names of the modules being traced, innermost last; on a
        # failure the last entry names the module whose code fx could not trace.
        self.calls_in_progress: list[str] = []
        # Per FloatFunctional path: the frame of its latest method call and
        # that call's index. Holding the frame keeps it from being reused by
        # a later call, so ``is`` tells calls apart.
        self._functional_calls: dict[str, tuple[FrameType, int]] = {}

    def trace(
        self,
        root: nn.Module | Callable[..., Any],
        concrete_args: dict[str, Any] | None = None,
    ) -> fx.Graph:
        try:
            return super().trace(root, concrete_args)
        finally:
            self._functional_calls.clear()

    def create_node(
        self,
        kind: str,
        target: Any,
        args: Any,
        kwargs: Any,
        name: str | None = None,
        type_expr: Any | None = None,
    ) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        site = self._functional_call_site()
        if site is not None:
            node.meta[CALL_SITE] = site
        return node

    def _functional_call_site(self) -> tuple[str, int] | None:
        """The FloatFunctional method call the current node is made in, if any."""
        codes = _functional_codes()
        frame: FrameType | None = sys._getframe(2)
        for _ in range(_MAX_CALL_DEPTH):
            if frame is None:
                return None
            if frame.f_code in codes:
                owner = frame.f_locals.get("self")
                if not isinstance(owner, nn.Module):
                    return None
                try:
                    path = self.path_of_module(owner)
                except NameError:
                    return None
                last = self._functional_calls.get(path)
                if last is None or last[0] is not frame:
                    index = 0 if last is None else last[1] + 1
                    self._functional_calls[path] = (frame, index)
                return path, self._functional_calls[path][1]
            frame = frame.f_back
        return None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_module_names:
            return True
        if self.leaf_modules and isinstance(m, self.leaf_modules):
            return True
        if type(m).__module__.startswith("torch.ao.nn.intrinsic"):
            # Fused float modules (nni.ConvReLU2d) are Sequentials, but one op.
            return True
        if _is_torch_module(m):
            return not isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict)
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        # On a failure the entry stays, naming the module for the message.
        self.calls_in_progress.append(self.path_of_module(m))
        result = super().call_module(m, forward, args, kwargs)
        self.calls_in_progress.pop()
        return result


def trace(
    model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
    role: str = "model",
) -> fx.GraphModule:
    """Return a ``GraphModule`` for ``model``, tracing it only if needed.

    Args:
        model: a ``GraphModule`` (returned as it is) or any ``nn.Module``.
        leaf_modules: module classes to keep as single operations.
        leaf_module_names: qualified submodule names to keep as single
            operations.
        role: how error messages refer to the model ("float model", ...).

    Raises:
        ModelError: ``model`` is not an ``nn.Module``.
        ArgumentError: ``leaf_modules`` or ``leaf_module_names`` is not a list
            of module classes or of names.
        TraceError: ``torch.fx`` cannot trace ``model``; the message names the
            module and how to keep it as a leaf.

    Example:
        >>> gm = trace(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
        >>> [n.target for n in gm.graph.nodes if n.op == "call_module"]
        ['0', '1']
    """
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"the {role} must be a torch.nn.Module, got {type(model).__name__}; "
            "pass the model object itself (not its state_dict or a path)"
        )
    check_leaf_options(leaf_modules, leaf_module_names)
    if isinstance(model, fx.GraphModule):
        return model

    tracer = LeafTracer(leaf_modules, leaf_module_names)
    try:
        graph = tracer.trace(model)
    except Exception as err:
        raise _trace_error(model, tracer, role, err) from err
    name = type(model).__name__
    gm = fx.GraphModule(tracer.root, graph, name)
    logger.debug("traced %s %s: %d nodes", role, name, len(graph.nodes))
    return gm


def check_leaf_options(leaf_modules: object, leaf_module_names: object) -> None:
    """Raise :class:`ArgumentError` unless the leaf options are lists of
    ``nn.Module`` classes and of module names.

    Example:
        >>> check_leaf_options([torch.nn.LSTM], ["encoder.block"])
    """
    if isinstance(leaf_module_names, str) or not isinstance(
        leaf_module_names, Iterable
    ):
        raise ArgumentError(
            f"leaf_module_names must be a list of submodule names, got "
            f"{leaf_module_names!r}; e.g. leaf_module_names=[{leaf_module_names!r}]"
        )
    for name in leaf_module_names:
        if not isinstance(name, str):
            raise ArgumentError(
                f"leaf_module_names holds {name!r}, not a name; give qualified "
                "submodule names such as 'layer1.0' (model.named_modules())"
            )
    if isinstance(leaf_modules, type) or not isinstance(leaf_modules, Iterable):
        shown = getattr(leaf_modules, "__name__", repr(leaf_modules))
        raise ArgumentError(
            f"leaf_modules must be a list of module classes, got {shown}; "
            f"e.g. leaf_modules=[{shown}]"
        )
    for cls in leaf_modules:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ArgumentError(
                f"leaf_modules holds {cls!r}, not an nn.Module subclass; give "
                "the class (MyBlock), not an instance (MyBlock()) or a name"
            )


def leaves_of(
    prepare_custom_config: Any,
) -> tuple[tuple[type[nn.Module], ...], tuple[str, ...]]:
    """The leaf classes and names a ``PrepareCustomConfig`` gives ``prepare_fx``.

    Pass them on as ``leaf_modules=`` and ``leaf_module_names=`` so that fxns
    keeps the same parts untraced as the quantization did.

    Args:
        prepare_custom_config: a ``PrepareCustomConfig`` or its dict form.

    Example:
        >>> from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
        >>> config = PrepareCustomConfig().set_non_traceable_module_names(["head"])
        >>> leaves_of(config)
        ((), ('head',))
    """
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

    config = prepare_custom_config
    if isinstance(config, dict):
        config = PrepareCustomConfig.from_dict(config)
    if not isinstance(config, PrepareCustomConfig):
        raise ModelError(
            f"expected a PrepareCustomConfig or its dict form, got "
            f"{type(prepare_custom_config).__name__}"
        )
    return (
        tuple(config.non_traceable_module_classes),
        tuple(config.non_traceable_module_names),
    )


@functools.cache
def _functional_codes() -> frozenset[CodeType]:
    """The code of every method of FloatFunctional and its eager twins."""
    from torch.ao.nn.quantized import FloatFunctional, FXFloatFunctional, QFunctional

    return frozenset(
        value.__code__
        for cls in (FloatFunctional, FXFloatFunctional, QFunctional)
        for name, value in vars(cls).items()
        if callable(value) and hasattr(value, "__code__") and not name.startswith("_")
    )


def _is_torch_module(m: nn.Module) -> bool:
    module = type(m).__module__
    return module.startswith(("torch.nn.", "torch.ao.nn.", "torch.ao.quantization."))


def _trace_error(
    model: nn.Module, tracer: LeafTracer, role: str, err: Exception
) -> TraceError:
    path = tracer.calls_in_progress[-1] if tracer.calls_in_progress else ""
    if path:
        culprit = tracer.root.get_submodule(path)
        where = f"module '{path}' ({type(culprit).__name__})"
        fix = (
            f"keep it as one opaque operation with leaf_module_names=['{path}'] "
            f"or leaf_modules=[{type(culprit).__name__}]"
        )
    else:
        where = f"the forward of {type(model).__name__} itself"
        fix = (
            "move the untraceable code into a submodule and name it in "
            "leaf_module_names, or pass a GraphModule you traced yourself"
        )
    first_line = (
        str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    )
    # A misspelt leaf name is the likeliest reason a named leaf did not help.
    paths = sorted(name for name, _ in model.named_modules() if name)
    unknown = [
        f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        for name in sorted(tracer.leaf_module_names)
        if name not in paths
        for close in [difflib.get_close_matches(name, paths, n=1)]
    ]
    typo = (
        f" leaf_module_names has {', '.join(unknown)}, which the {role} has no "
        "submodule of."
        if unknown
        else ""
    )
    return TraceError(
        f"torch.fx cannot trace the {role}: {where} failed with "
        f"{type(err).__name__}: {first_line}. To compare around it, {fix}.{typo}"
    )
