"""Data-parallel comparison: two processes, half the batches each, one report.

The test spawns two processes (``torch.multiprocessing.spawn``) that form a
``gloo`` group on 127.0.0.1, each comparing its own half of the batches; every
process's report must equal the report of one process on all of them.

Teardown is where multi-process tests go flaky, so the group is set up and
taken down with care:

- the rendezvous store (a ``TCPStore``) is created here, in the test process,
  on a port the system picks and keeps bound: no port is chosen, released and
  then bound again by someone else, and the store outlives both workers, so
  the first one to leave cannot take it away from the other;
- each worker meets the other at a barrier before ``destroy_process_group``,
  so neither tears down while the other is still in a collective;
- each worker then ends with ``os._exit``: its results are on disk and its
  group destroyed, and skipping interpreter finalization avoids the race
  between gloo's threads and the interpreter's teardown that aborts a
  process with "terminate called without an active exception" (SIGABRT;
  see pytorch/pytorch#179291).
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fxns
from fxns.report import Report

from .conftest import quantize_module

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)

WORLD = 2


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = y + torch.sigmoid(y)
        return self.fc(y.mean((2, 3)))


@functools.cache
def _models() -> tuple[nn.Module, torch.fx.GraphModule]:
    torch.manual_seed(0)
    model = Net().eval()
    return model, quantize_module(model, torch.randn(2, 3, 8, 8), n=3)


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(2, 3, 8, 8, generator=g) for _ in range(5)]
    batches[3][0, 1, 2, 2] = math.nan  # counted the same in one or two processes
    batches[4] = batches[4] * 3.0  # a larger maximum error in the second half
    return batches


def _share(rank: int, split: str) -> list[torch.Tensor]:
    batches = _batches()
    if split == "halves":
        return batches[:3] if rank == 0 else batches[3:]
    return batches if rank == 0 else []  # "one-empty": all on one process


def _reports(batches: list[torch.Tensor]) -> dict[str, Report]:
    model, quant = _models()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NaN warning
        # One layout throughout: "auto" may pick a different one in each
        # process, and the float values then differ by rounding.
        for mode in ("shadow", "propagated"):
            out[mode] = fxns.compare_activations(
                model, quant, batches, mode=mode, layout="channels_last"
            )
        shadow = fxns.add_shadows(model, quant, layout="channels_last")
        f_log, q_log = fxns.add_loggers(model, quant)
        with torch.no_grad():
            for batch in batches:
                shadow(batch)
                f_log(batch)
                q_log(batch)
        out["collect-shadows"] = fxns.collect(shadow)
        out["collect-loggers"] = fxns.collect(f_log, q_log)
    return out


SPLITS = ("halves", "one-empty")


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    store = dist.TCPStore(
        "127.0.0.1",
        port,
        WORLD,
        is_master=False,
        timeout=datetime.timedelta(seconds=120),
    )
    dist.init_process_group(
        "gloo",
        store=store,
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    code = 1
    try:
        for split in SPLITS:
            for name, report in _reports(_share(rank, split)).items():
                Path(out, f"{split}-{name}-{rank}.json").write_text(report.to_json())

        # Last, as it ends with an error: process 1's second batch does not
        # fit the model.
        model, quant = _models()
        batches = _batches()[:2]
        if rank == 1:
            batches[1] = torch.randn(2, 5)
        try:
            fxns.compare_activations(model, quant, batches)
        except Exception as err:
            Path(out, f"error-{rank}.txt").write_text(f"{type(err).__name__}: {err}")
        # Both processes are done with every collective before either one
        # takes the group down.
        dist.barrier()
        code = 0
    except BaseException:
        Path(out, f"crash-{rank}.txt").write_text(traceback.format_exc())
    finally:
        try:
            dist.destroy_process_group()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the two processes wrote: one spawn for every test here."""
    out = tmp_path_factory.mktemp("distributed")
    # The store lives here, on a port the system picked and this process
    # keeps, until both workers have left.
    store = dist.TCPStore(
        "127.0.0.1",
        0,
        None,
        is_master=True,
        wait_for_workers=False,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        mp.spawn(_worker, args=(store.port, str(out)), nprocs=WORLD, join=True)
    except Exception as err:
        crashes = "\n".join(p.read_text() for p in sorted(out.glob("crash-*.txt")))
        pytest.fail(f"a worker failed: {err}\n{crashes}")
    finally:
        del store
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_two_processes_give_the_report_of_one_process_on_all_batches(
    results: Path, split: str
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels, so the same float32 sums
    try:
        single = _reports(_batches())
    finally:
        torch.set_num_threads(threads)
    for name, expected in single.items():
        for rank in range(WORLD):
            merged = Report.from_json(results / f"{split}-{name}-{rank}.json")
            _assert_same_report(merged, expected, name)
            assert merged.meta["processes"] == WORLD
        assert expected.meta["processes"] == 1


def _assert_same_report(merged: Report, single: Report, what: str) -> None:
    assert merged.mode == single.mode
    assert merged.meta["batches"] == single.meta["batches"] == 5, what
    assert merged.meta["elements"] == single.meta["elements"], what
    assert merged.names == single.names, what
    for a, b in zip(merged.rows, single.rows, strict=True):
        where = f"{what}: {a.name}"
        assert (a.elements, a.nonfinite_float, a.nonfinite_quant, a.note) == (
            b.elements,
            b.nonfinite_float,
            b.nonfinite_quant,
            b.note,
        ), where
        assert a.metrics.keys() == b.metrics.keys(), where
        for metric, value in b.metrics.items():
            assert a.metrics[metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (
                where,
                metric,
            )
    # The NaN of batch 3 reached the float side of the propagated comparison.
    if single.mode == "propagated":
        assert any(row.nonfinite_float for row in single.rows)


def test_a_failure_in_one_process_is_raised_in_every_process(results: Path) -> None:
    mine = (results / "error-1.txt").read_text()
    theirs = (results / "error-0.txt").read_text()
    assert mine.startswith("DataError: batch 1 (Tensor[2, 5] float32)")
    assert theirs.startswith("DistributedError: process 1 of the group failed: ")
    assert "DataError: batch 1 (Tensor[2, 5] float32)" in theirs


def test_without_an_initialised_group_nothing_is_reduced() -> None:
    assert fxns.distributed.group_for() is None
    assert fxns.distributed.group_for(enabled=False) is None
