"""The memory layout the float side of an instrumented model computes in.

PyTorch's quantized CPU kernels work in channels-last (NHWC); a float model
fed an ordinary tensor works in contiguous (NCHW). An instrumented model
computes float values beside quantized ones, and which layout its float ops
should use is a question of speed only (the values differ by float rounding):

- in channels-last, float and quantized values are laid out alike, so each
  comparison is one flat pass over memory, and float convolutions are often
  faster (mobilenets at any size; most models on large images);
- in contiguous layout, the float ops run as they do in the float model,
  which is faster for some convolutions on small images (ResNet-18 at
  2x3x64x64: 12 ms contiguous, 35 ms channels-last), and each comparison
  transposes one side on the fly.

Neither wins everywhere, so by default an instrumented model measures: its
first six calls alternate the two layouts (two warm-up calls, then two timed
calls of each), and it keeps the faster one from then on. Every call
measures correctly whatever the layout. ``layout="contiguous"`` or
``"channels_last"`` fixes the choice instead (for values that are
reproducible to the last bit from run to run, say).

In propagated mode the layout applies to the model inputs of the float side
(4-D floating-point inputs become channels-last; layers keep the layout of
their input); in shadow mode to the dequantized inputs of the shadows (kept
channels-last as the quantized kernels made them, or made contiguous). A
float value of the quantized model (a layer left in float) reaches its shadow
in its own layout either way, so that the shadow computes bit for bit what
the layer computed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from . import _onepass
from .errors import ArgumentError
from .stats import as_float

__all__ = [
    "LAYOUTS",
    "FloatLayout",
    "InputLayout",
    "ShadowInputs",
    "TunedGraphModule",
    "check_layout",
    "shadow_input",
]

CONTIGUOUS = "contiguous"
CHANNELS_LAST = "channels_last"
AUTO = "auto"
LAYOUTS: tuple[str, ...] = (AUTO, CONTIGUOUS, CHANNELS_LAST)

# Warm-up calls of each layout, then timed calls of each.
_WARMUP = 1
_TIMED = 2


def check_layout(layout: object) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else an ``ArgumentError``.

    Example:
        >>> check_layout("auto")
        'auto'
    """
    if layout not in LAYOUTS:
        raise ArgumentError(
            f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}"
        )
    return str(layout)


class FloatLayout(nn.Module):
    """Which layout the float ops use, and the trial calls that choose it.

    Called in the graph on the values it may convert; :class:`TunedGraphModule`
    runs the trials around whole calls.
    """

    # The layout used when nothing was measured, and the one tried against it.
    default = CONTIGUOUS
    other = CHANNELS_LAST

    def __init__(self, layout: str = AUTO) -> None:
        super().__init__()
        check_layout(layout)
        self.decided = layout != AUTO
        self.layout = self.default if layout == AUTO else layout
        self.schedule = [self.default, self.other] * (_WARMUP + _TIMED)
        self.calls = 0
        self.times: dict[str, list[float]] = {self.default: [], self.other: []}
        # Whether the last call met a value the layout would change.
        self.applies = False

    def decide(self, layout: str) -> None:
        """Use ``layout`` from now on."""
        self.layout = layout
        self.decided = True

    def trial(
        self, run: Callable[[], Any], state: Callable[[], Callable[[], None]]
    ) -> Any:
        """One call of the instrumented model while the layout is undecided.

        ``state()`` saves what a call accumulates and returns the function
        that puts it back, for a call in the non-default layout that fails:
        that call is then run again in the default layout, which is kept.
        """
        self.layout = self.schedule[self.calls]
        self.applies = False
        restore = state() if self.layout != self.default else None
        start = time.perf_counter()
        try:
            out = run()
        except Exception:
            if restore is None:
                raise
            restore()
            self.decide(self.default)
            return run()
        elapsed = time.perf_counter() - start
        if self.calls == 0 and not self.applies:
            # Nothing this layout touches (no 4-D value): nothing to choose.
            self.decide(self.default)
            return out
        if self.calls >= 2 * _WARMUP:
            self.times[self.layout].append(elapsed)
        self.calls += 1
        if self.calls == len(self.schedule):
            self.decide(min(self.times, key=lambda k: min(self.times[k])))
        return out

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, decided={self.decided}"


class InputLayout(FloatLayout):
    """Propagated mode: the float side's model inputs, as given or channels-last.

    Example:
        >>> layout = InputLayout("channels_last")
        >>> layout(torch.ones(1, 3, 4, 4)).is_contiguous()
        False
    """

    default = CONTIGUOUS
    other = CHANNELS_LAST

    def forward(self, value: Any) -> Any:
        if not (
            isinstance(value, torch.Tensor)
            and value.dim() == 4
            and value.is_floating_point()
        ):
            return value
        if value.is_contiguous(memory_format=torch.channels_last):
            return value
        self.applies = True
        if self.layout == CHANNELS_LAST:
            return value.contiguous(memory_format=torch.channels_last)
        return value

    # Called hundreds of times a batch: straight to forward, past nn.Module's
    # hook machinery (an fxns module that nothing hooks).
    __call__ = forward


class ShadowInputs(FloatLayout):
    """Shadow mode: what a shadow receives for a quantized-model value.

    Example:
        >>> q = torch.quantize_per_tensor(torch.ones(1, 2, 3, 3), 0.5, 0,
        ...                               torch.quint8)
        >>> q = q.contiguous(memory_format=torch.channels_last)
        >>> ShadowInputs("contiguous")(q).is_contiguous()
        True
    """

    default = CHANNELS_LAST
    other = CONTIGUOUS

    def forward(self, value: Any) -> Any:
        return shadow_input(value, contiguous=self.layout == CONTIGUOUS, seen=self)

    # Called hundreds of times a batch: straight to forward, past nn.Module's
    # hook machinery (an fxns module that nothing hooks).
    __call__ = forward


def shadow_input(value: Any, contiguous: bool = False, seen: Any = None) -> Any:
    """What a float shadow receives for a quantized-model value.

    A new tensor, so that in-place ops on either side cannot reach the other.
    Quantized, half and bfloat16 values become float32; integer values (the
    indices of an embedding) keep their type. Tuples and lists (an LSTM's
    state) are converted element by element.

    A quantized value keeps its layout (channels-last, as the quantized
    kernels make it) unless ``contiguous`` is set; a float value always keeps
    its own, so that a layer left in float in the quantized model computes in
    its shadow bit for bit what it computed in the model. ``seen`` (a
    :class:`FloatLayout`) is told when ``contiguous`` would change a layout.

    Example:
        >>> shadow_input(torch.quantize_per_tensor(torch.ones(2), 0.5, 0,
        ...                                        torch.quint8))
        tensor([1., 1.])
    """
    if isinstance(value, tuple | list):
        return type(value)(shadow_input(v, contiguous, seen) for v in value)
    if not isinstance(value, torch.Tensor):
        return value
    if value.is_quantized:
        if (
            seen is not None
            and value.dim() == 4
            and not value.is_contiguous()
            and value.is_contiguous(memory_format=torch.channels_last)
        ):
            seen.applies = True
        return _onepass.dequantize_to(value, contiguous)
    if not value.is_floating_point():
        return value.clone()
    fresh = as_float(value)
    return value.clone() if fresh is value else fresh


class TunedGraphModule(fx.GraphModule):
    """A ``GraphModule`` whose ``fxns_layout`` submodule chooses its layout.

    While the layout is undecided, each call goes through
    :meth:`FloatLayout.trial`; after that, calls are plain ``GraphModule``
    calls.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        layout = self._modules.get("fxns_layout")
        if not isinstance(layout, FloatLayout) or layout.decided:
            return super().__call__(*args, **kwargs)
        out = layout.trial(
            lambda: super(TunedGraphModule, self).__call__(*args, **kwargs),
            self._save_state,
        )
        if layout.decided:
            # Submodules that keep something per layout keep one.
            for m in self.modules():
                settle = getattr(m, "fxns_settle", None)
                if callable(settle):
                    settle(layout.layout)
        return out

    def _save_state(self) -> Callable[[], None]:
        """Save what every probe has accumulated; return what puts it back.

        Probes are the submodules with an ``fxns_save`` method.
        """
        restores = []
        for m in self.modules():
            save = getattr(m, "fxns_save", None)
            if callable(save):
                restores.append(save())

        def restore() -> None:
            for put_back in restores:
                put_back()

        return restore
