"""What every benchmark script shares: models, timing, memory, output.

Each script in ``benchmarks/`` answers one question and builds on these
pieces:

- :func:`quantized_model` builds a model with random weights and quantizes it
  with ``prepare_fx``/``convert_fx``, keeping the prepared model too (the
  ``torch.ao.ns`` functions take it as the float side);
- :func:`interleaved` times several candidates on a noisy machine: warm-up
  rounds, then rounds of passes that call every candidate once (A B C A B C
  ...), the first one rotating, so that drift and bursts of load from other
  jobs fall on all of them alike;
- :func:`rss_mb` reads the process's resident memory;
- :func:`print_table` and :func:`write_json` give the results out.

Run the scripts as modules from the repository root, e.g.
``python -m benchmarks.bench_end_to_end``.
"""

from __future__ import annotations

import copy
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
    "FULL_SHAPE",
    "MODELS",
    "SMALL_SHAPE",
    "Candidate",
    "QuantizedModel",
    "Timings",
    "calls_per_sample",
    "environment",
    "first_line",
    "interleaved",
    "median",
    "print_table",
    "quantized_model",
    "rss_mb",
    "write_json",
]

# Input shapes: ImageNet-sized batches, and a small one for quick runs.
FULL_SHAPE = (8, 3, 224, 224)
SMALL_SHAPE = (2, 3, 64, 64)


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


# Model name → factory of the float model (random weights).
MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    "mobilenet_v3_large": _torchvision("mobilenet_v3_large"),
    "demo": _demo,
}


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


def quantized_model(
    name: str,
    shape: Sequence[int],
    calibration_batches: int = 3,
    backend: str = "x86",
    seed: int = 0,
) -> QuantizedModel:
    """``MODELS[name]`` with random weights, quantized for ``backend``.

    This does what ``fxns.quantize.quantize_fx`` does, and keeps the prepared
    model, which ``torch.ao.ns`` needs.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    g = torch.Generator().manual_seed(seed)
    batches = [
        torch.randn(tuple(shape), generator=g) for _ in range(calibration_batches)
    ]
    with quiet_torch_ao():
        prepared = prepare_fx(
            copy.deepcopy(model), get_default_qconfig_mapping(backend), (batches[0],)
        )
        with torch.no_grad():
            for b in batches:
                prepared(b)
        quant = convert_fx(copy.deepcopy(prepared))
    batch = torch.randn(tuple(shape), generator=g)
    return QuantizedModel(name, model, prepared.eval(), quant.eval(), batch)


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
