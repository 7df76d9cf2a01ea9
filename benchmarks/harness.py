"""What every benchmark script shares: models, timing, memory, output.

Each script in ``benchmarks/`` answers one question and builds on these
pieces:

- :data:`MODELS` names the models (torchvision's, and generated ones from
  ``benchmarks/models.py``); :func:`input_shape` gives each one's input for
  an image batch shape;
- :func:`quantized_model` builds a model with random weights and quantizes it
  with ``prepare_fx``/``convert_fx`` (static or dynamic), keeping the
  prepared model too (the ``torch.ao.ns`` functions take it as the float
  side);
- :func:`interleaved` times several candidates on a noisy machine: warm-up
  rounds, then rounds of passes that call every candidate once (A B C A B C
  ...), the first one rotating, so that drift and bursts of load from other
  jobs fall on all of them alike;
- :func:`settle_layout` calls an fxns instrumented module until it has
  chosen its float side's memory layout, so that its trial calls fall
  outside timed rounds;
- :func:`rss_mb` reads the process's resident memory, and
  :func:`kept_tensor_bytes` what a model keeps in tensors besides its
  parameters and buffers;
- :func:`print_table` and :func:`write_json` give the results out.

Run the scripts as modules from the repository root, e.g.
``python -m benchmarks.bench_end_to_end``.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch import fx, nn

from fxns.quantize import quiet_torch_ao

__all__ = [
    "CLOCKS",
    "FULL_SHAPE",
    "KINDS",
    "MODELS",
    "SMALL_SHAPE",
    "Candidate",
    "QuantizedModel",
    "Timings",
    "add_timing_options",
    "calls_per_sample",
    "environment",
    "first_line",
    "input_shape",
    "interleaved",
    "kept_tensor_bytes",
    "median",
    "print_table",
    "quantized_model",
    "rss_mb",
    "settle_layout",
    "shape_text",
    "steady_allocator",
    "write_json",
]

# Input shapes: ImageNet-sized batches, and a small one for quick runs.
FULL_SHAPE = (8, 3, 224, 224)
SMALL_SHAPE = (2, 3, 64, 64)

# What the scripts' --clock chooses: wall time, or the CPU time of this
# process (steady on a shared machine when torch runs one thread).
CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": time.process_time,
}

# Quantization kinds: static (weights and activations, calibrated) or
# dynamic (weights only; activations quantized on the fly: Linear, LSTM).
KINDS = ("static", "dynamic")


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model: nn.Module = getattr(torchvision.models, name)()
        return model

    return build


def _demo() -> nn.Module:
    from fxns.demo import DemoNet

    return DemoNet()


def _resnet_like() -> nn.Module:
    from benchmarks.models import StagedResNetLike

    return StagedResNetLike()


def _transformer_like() -> nn.Module:
    from benchmarks.models import TransformerLike

    return TransformerLike(17, dim=TRANSFORMER_DIM, heads=4)


def _lstm_like() -> nn.Module:
    from benchmarks.models import LSTMLike

    return LSTMLike(dim=TRANSFORMER_DIM)


# The generated models of realistic width: about 500 fx nodes each.
TRANSFORMER_DIM = 128
SEQUENCE = 64

# Model name → factory of the float model (random weights).
MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    "mobilenet_v3_large": _torchvision("mobilenet_v3_large"),
    "resnet-like": _resnet_like,
    "transformer-like": _transformer_like,
    "lstm-like": _lstm_like,
    "demo": _demo,
}

# Models that do not take images: their input for an image batch shape
# (the batch size is kept).
_INPUTS: dict[str, Callable[[Sequence[int]], tuple[int, ...]]] = {
    "transformer-like": lambda s: (s[0], SEQUENCE, TRANSFORMER_DIM),
    "lstm-like": lambda s: (SEQUENCE, s[0], TRANSFORMER_DIM),
}


def input_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The input shape of model ``name`` for the image batch shape ``shape``.

    Example:
        >>> input_shape("transformer-like", (2, 3, 64, 64))
        (2, 64, 128)
        >>> input_shape("resnet18", (2, 3, 64, 64))
        (2, 3, 64, 64)
    """
    make = _INPUTS.get(name)
    return tuple(shape) if make is None else make(shape)


def shape_text(shape: Sequence[int]) -> str:
    """``2x3x64x64``."""
    return "x".join(map(str, shape))


@dataclass
class QuantizedModel:
    """A float model, its prepared (observed) form and its quantized form."""

    name: str
    float_model: nn.Module
    # After prepare_fx and calibration: torch.ao.ns's float side.
    prepared: fx.GraphModule
    # convert_fx of a copy of ``prepared``.
    quant_model: fx.GraphModule
    # The batch every timed run uses.
    batch: torch.Tensor
    # "static" or "dynamic".
    kind: str = "static"


def quantized_model(
    name: str,
    shape: Sequence[int],
    calibration_batches: int = 3,
    backend: str = "x86",
    seed: int = 0,
    kind: str = "static",
) -> QuantizedModel:
    """``MODELS[name]`` with random weights, quantized for ``backend``.

    ``shape`` is an image batch shape; models that take other inputs get
    :func:`input_shape`'s. ``kind`` is ``"static"`` (the backend's default
    qconfig mapping, calibrated on ``calibration_batches`` random batches)
    or ``"dynamic"`` (``default_dynamic_qconfig`` everywhere: Linear and
    LSTM layers get int8 weights, the rest stays float).

    This does what ``fxns.quantize.quantize_fx`` does, and keeps the prepared
    model, which ``torch.ao.ns`` needs.
    """
    from torch.ao.quantization import (
        QConfigMapping,
        default_dynamic_qconfig,
        get_default_qconfig_mapping,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shape = input_shape(name, shape)
    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    g = torch.Generator().manual_seed(seed)
    batches = [
        torch.randn(tuple(shape), generator=g)
        for _ in range(max(1, calibration_batches))
    ]
    mapping = (
        get_default_qconfig_mapping(backend)
        if kind == "static"
        else QConfigMapping().set_global(default_dynamic_qconfig)
    )
    with quiet_torch_ao(), warnings.catch_warnings():
        # Dynamic LSTMs: "To copy construct from a tensor ..." from torch.ao.
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        prepared = prepare_fx(copy.deepcopy(model), mapping, (batches[0],))
        with torch.no_grad():
            for b in batches:
                prepared(b)
        quant = convert_fx(copy.deepcopy(prepared))
    batch = torch.randn(tuple(shape), generator=g)
    return QuantizedModel(name, model, prepared.eval(), quant.eval(), batch, kind)


@dataclass
class Candidate:
    """One thing to time: ``run`` is timed, ``prepare`` (if any) is not.

    ``prepare`` runs just before each call of ``run`` and its result is
    passed to it; use it for work that must not count (fresh copies of a
    model, clearing a logger).
    """

    name: str
    run: Callable[..., Any]
    prepare: Callable[[], Any] | None = None
    # Whether an exception is recorded (and the candidate dropped) rather
    # than raised: for tools other than the one under test.
    may_fail: bool = False


@dataclass
class Timings:
    """What :func:`interleaved` measured."""

    # Seconds per call, by candidate name, one entry per timed round; entry
    # ``i`` of every list comes from the same round.
    times: dict[str, list[float]]
    # First line of the exception, by name, for candidates that failed.
    errors: dict[str, str]


def add_timing_options(p: argparse.ArgumentParser, warmup: bool = True) -> None:
    """The timing options every script shares, with the same defaults:
    ``--repeat``, ``--warmup`` (unless ``warmup`` is false), ``--sample-seconds``,
    ``--threads`` and ``--clock`` (see :func:`interleaved`)."""
    p.add_argument(
        "--repeat", type=int, default=5, help="timed run rounds (default: 5)"
    )
    if warmup:
        p.add_argument(
            "--warmup", type=int, default=1, help="discarded rounds first (default: 1)"
        )
    p.add_argument(
        "--sample-seconds",
        type=float,
        default=0.5,
        help="short runs are grouped until the floor has run this long per "
        "round (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 0 leaves torch's default (default: %(default)s)",
    )
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="CPU time of this process (steady on a shared machine, with one "
        "thread) or wall time (default: %(default)s)",
    )


def steady_allocator() -> bool:
    """Have glibc's malloc keep freed memory for reuse; ``True`` if it could.

    By default glibc hands large blocks (an activation of a few MB) back to
    the system when they are freed and maps them afresh on the next call,
    page faults and all, until its adaptive threshold has grown past them;
    so a model's forward pass gets faster as the process runs, whatever runs
    it (mobilenet_v2 at 8x3x224x224: 250 ms in a fresh process, 135 ms after
    a few other models). Raising both thresholds makes every candidate run
    in that steady state from the start, so a ratio does not depend on what
    ran before it. Only the benchmark processes do this; fxns never does.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(
        libc.mallopt(m_mmap_threshold, 1 << 30)
        and libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    )


def interleaved(
    candidates: Sequence[Candidate],
    repeat: int,
    warmup: int = 1,
    number: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> Timings:
    """Seconds per call of each candidate, one list entry per round.

    A round is ``number`` passes; a pass calls every candidate once (A B C A
    B C ...), starting one candidate later than the pass before, so that a
    burst of load from elsewhere falls on all of them alike. Each candidate's
    entry for the round is the mean of its ``number`` calls. Warm-up rounds
    are run and discarded. A candidate that may fail and raises is dropped,
    with its times so far; the others go on, so ratios can still be taken
    round by round between any two candidates that did not fail.

    ``clock`` is wall time by default; ``time.process_time`` (CPU seconds of
    this process) is steadier on a machine other jobs share, as long as torch
    runs one thread.
    """
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    errors: dict[str, str] = {}
    n = len(candidates)
    for round_ in range(warmup + repeat):
        total = dict.fromkeys(times, 0.0)
        for pass_ in range(number):
            for k in range(n):
                c = candidates[(round_ * number + pass_ + k) % n]
                if c.name in errors:
                    continue
                try:
                    args = () if c.prepare is None else (c.prepare(),)
                    start = clock()
                    c.run(*args)
                    total[c.name] += clock() - start
                except Exception as err:
                    if not c.may_fail:
                        raise
                    errors[c.name] = first_line(err)
                    times[c.name] = []
        if round_ >= warmup:
            for name, seconds in total.items():
                if name not in errors:
                    times[name].append(seconds / number)
    return Timings(times, errors)


def calls_per_sample(fn: Callable[[], Any], min_seconds: float = 0.5) -> int:
    """How many calls of ``fn`` take at least ``min_seconds`` (one call timed).

    Short calls are timed in groups, so that one sample is long enough for
    the clock and the scheduler's noise not to dominate it.
    """
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(1, math.ceil(min_seconds / max(once, 1e-6)))


def settle_layout(module: nn.Module, *args: Any, limit: int = 8) -> tuple[str, int]:
    """Call an fxns instrumented module until it has chosen its layout.

    fxns's instrumented modules time their first calls (at most six) to
    choose the memory layout of their float side (``fxns.layout``). Calling
    the module on the timed batch until ``module.fxns_layout.decided`` keeps
    those trial calls out of timed rounds. Returns the layout chosen (or
    ``"fixed"`` for a module without the choice, ``"undecided"`` if
    ``limit`` calls did not settle it) and the number of calls made.
    """
    layout = getattr(module, "fxns_layout", None)
    if layout is None or not hasattr(layout, "decided"):
        return "fixed", 0
    calls = 0
    with torch.no_grad():
        while not layout.decided and calls < limit:
            module(*args)
            calls += 1
    return (str(layout.layout) if layout.decided else "undecided"), calls


def kept_tensor_bytes(*models: nn.Module) -> int:
    """Bytes of the tensors ``models`` hold besides parameters and buffers.

    Walks every submodule's attributes (lists, tuples, dicts and plain
    objects within them, a few levels deep): what loggers keep of the
    activations they saw, and constants a traced graph holds. Each tensor
    storage is counted once.
    """
    seen: set[int] = set()
    total = 0

    def visit(value: Any, depth: int) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if value.is_quantized:
                nbytes = value.numel() * value.element_size()
                key = id(value)
            else:
                storage = value.untyped_storage()
                nbytes, key = storage.nbytes(), storage.data_ptr()
            if key not in seen:
                seen.add(key)
                total += nbytes
            return
        if depth <= 0 or isinstance(value, nn.Module | str | bytes | int | float):
            return
        if isinstance(value, dict):
            for v in value.values():
                visit(v, depth - 1)
        elif isinstance(value, list | tuple | set):
            for v in value:
                visit(v, depth - 1)
        elif hasattr(value, "__dict__"):
            for v in vars(value).values():
                visit(v, depth - 1)

    skip = {"_parameters", "_buffers", "_modules"}
    for model in models:
        for m in model.modules():
            for key, value in vars(m).items():
                if key not in skip and not key.startswith("_forward"):
                    visit(value, 4)
    return total


def first_line(err: BaseException, limit: int = 120) -> str:
    """``Type: first sentence of the message``, at most ``limit`` characters."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    line = line.split(". ")[0]
    line = f"{type(err).__name__}: {line}" if line else type(err).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def median(values: Sequence[float]) -> float:
    """The median, ``nan`` for no values."""
    return statistics.median(values) if values else float("nan")


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment() -> dict[str, Any]:
    """What the numbers depend on: versions, threads, engine, machine."""
    import fxns

    return {
        "fxns": fxns.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine,
    }


def print_table(
    rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str = ""
) -> str:
    """Print and return ``rows`` as a GitHub-style table."""
    text = tabulate(rows, headers=headers, tablefmt="github", floatfmt=".2f")
    if title:
        text = f"{title}\n\n{text}"
    print(text)
    return text


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
