"""Statistics of several processes as one: step 5 of the pipeline, across a group.

Every statistic fxns keeps is a sum, a count or a maximum
(:class:`fxns.stats.ErrorStats`), so statistics gathered by several processes,
each on its own share of the data, combine exactly into those of all the data.
When ``torch.distributed`` is initialised with more than one process,
:func:`fxns.compare_activations` and :func:`fxns.collect` call
:func:`check_in` and :func:`reduce_stats` so that every process returns the
same report, over every batch of every process.

The exchange, run by every process in the same order:

1. :func:`check_in` gathers a small summary of each process (did its run
   fail, which pairs it measured, why some pairs could not be compared). A
   process that failed takes part before it raises its own error, so the others
   raise :class:`~fxns.errors.DistributedError` instead of waiting forever.
   Processes that matched different pairs (different models) fail the same way.
2. :func:`reduce_stats` packs the accumulators of every pair into three
   tensors and reduces them with ``all_reduce``: the sums (float64) and the
   counts (int64) with ``SUM``, the maxima with ``MAX``.

Cost: four small collectives for the whole report, whatever the number of
layers. Any backend that reduces CPU tensors works; ``gloo`` is the usual one.

A process that is interrupted (``KeyboardInterrupt``), killed, or never calls
:func:`fxns.collect` does not take part, and the others wait until the
group's timeout, as with any collective.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from .errors import DistributedError
from .stats import ErrorStats

__all__ = ["CheckIn", "check_in", "group_for", "reduce_stats"]

logger = logging.getLogger(__name__)


def group_for(enabled: bool = True) -> Any | None:
    """The process group to reduce over, or ``None`` to stay in this process.

    ``None`` unless ``enabled`` and ``torch.distributed`` is initialised with
    more than one process.

    Example:
        >>> group_for() is None  # not initialised
        True
    """
    if not enabled or not dist.is_available() or not dist.is_initialized():
        return None
    if dist.get_world_size() < 2:
        return None
    return dist.group.WORLD


@dataclass
class CheckIn:
    """What the processes of a group told each other before reducing."""

    # Batches run by each process, in rank order.
    batches: list[int]
    # Why a pair could not be compared, by pair name, from any process.
    notes: dict[str, str] = field(default_factory=dict)


def check_in(
    group: Any,
    names: Sequence[str],
    notes: Mapping[str, str],
    batches: int,
    failure: BaseException | None = None,
) -> CheckIn:
    """Tell the other processes how this one's run went, and hear from them.

    Args:
        group: the process group (from :func:`group_for`).
        names: the pairs this process measured, in order.
        notes: why some of them could not be compared, by pair name.
        batches: the number of batches this process ran.
        failure: the error this process's run raised, if it did.

    Returns:
        The batches of every process and the union of their notes.

    Raises:
        DistributedError: another process failed, or the processes measured
            different pairs. (A process that failed itself returns normally;
            its caller raises its own error.)

    Example:
        >>> info = check_in(group, names, notes, batches=10)  # doctest: +SKIP
        >>> sum(info.batches)  # doctest: +SKIP
        20
    """
    mine: dict[str, Any] = {
        "failure": _describe(failure) if failure is not None else "",
        "names": list(names),
        "notes": dict(notes),
        "batches": batches,
    }
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    if failure is not None:
        return CheckIn([int(p["batches"]) for p in everyone])

    failed = [(rank, p["failure"]) for rank, p in enumerate(everyone) if p["failure"]]
    if failed:
        rank, what = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise DistributedError(
            f"process {rank} of the group failed{more}: {what}; fix that "
            "process's error (its own message has the details) and run again"
        )
    for rank, p in enumerate(everyone):
        if p["names"] != mine["names"]:
            theirs, ours = set(p["names"]), set(mine["names"])
            diff = sorted(theirs ^ ours)[:3]
            raise DistributedError(
                f"process {rank} compared different layers than process "
                f"{dist.get_rank(group)} ({len(p['names'])} vs {len(mine['names'])}"
                f" pairs; differing: {', '.join(diff) or 'the order'}); every "
                "process must compare the same float and quantized models"
            )
    merged: dict[str, str] = {}
    for p in everyone:
        for name, note in p["notes"].items():
            merged.setdefault(name, note)
    return CheckIn([int(p["batches"]) for p in everyone], merged)


def reduce_stats(stats: Mapping[str, ErrorStats], group: Any) -> dict[str, ErrorStats]:
    """The statistics of every process in ``group``, pair by pair.

    Every process passes its own statistics for the same pair names (in the
    same order) and gets the merged ones back; its own are left as they are.

    Example:
        >>> merged = reduce_stats({"fc": probe.stats}, group)  # doctest: +SKIP
        >>> merged["fc"].batches  # total over every process  # doctest: +SKIP
    """
    names = list(stats)
    sums = torch.tensor(
        [[s.ff, s.qq, s.fq, s.dd] for s in stats.values()], dtype=torch.float64
    ).reshape(len(names), 4)
    counts = torch.tensor(
        [
            [s.n, s.batches, s.nonfinite_float, s.nonfinite_quant, s.excluded]
            for s in stats.values()
        ],
        dtype=torch.int64,
    ).reshape(len(names), 5)
    maxima = torch.tensor(
        [s.max_abs for s in stats.values()], dtype=torch.float64
    ).reshape(len(names))

    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=group)

    merged = {}
    for i, name in enumerate(names):
        ff, qq, fq, dd = sums[i].tolist()
        n, batches, nonfinite_f, nonfinite_q, excluded = counts[i].tolist()
        merged[name] = ErrorStats(
            n=n,
            ff=ff,
            qq=qq,
            fq=fq,
            dd=dd,
            max_abs=float(maxima[i]),
            batches=batches,
            nonfinite_float=nonfinite_f,
            nonfinite_quant=nonfinite_q,
            excluded=excluded,
        )
    logger.info(
        "reduced the statistics of %d pairs over %d processes",
        len(names),
        dist.get_world_size(group),
    )
    return merged


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
