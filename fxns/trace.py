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
  that depends on the data).

Tracing never changes the model: the returned ``GraphModule`` refers to the
model's own submodules and parameters, and nothing is written back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import fx, nn

from .errors import ArgumentError, ModelError, TraceError

__all__ = ["LeafTracer", "check_leaf_options", "trace"]

logger = logging.getLogger(__name__)


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

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_module_names:
            return True
        if self.leaf_modules and isinstance(m, self.leaf_modules):
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
    return TraceError(
        f"torch.fx cannot trace the {role}: {where} failed with "
        f"{type(err).__name__}: {first_line}. To compare around it, {fix}."
    )
