"""How long matching takes as graphs grow, next to torch.ao.ns's matcher.

Generates ResNet-like and transformer-like models from about 100 to 10,000 fx
nodes, quantizes each with FX graph mode (``prepare_fx``/``convert_fx``), then
times, on the same pair of ``GraphModule``s:

- fxns: building both canonical graphs and aligning them
  (``build_op_graph`` twice, then ``match_graphs``), i.e. ``fxns.match``
  without the tracing;
- ``torch.ao.ns.fx.graph_matcher.get_matching_subgraph_pairs``, which takes
  about 10 ms per node, so it runs only up to ``--torch-max-nodes`` and prints
  "skipped" above that.

Also times torchvision's resnet50 (the target: under 50 ms). Every figure is
the best of ``--repeat`` runs, measured in this run on this machine.

Run from the repository root::

    python benchmarks/bench_match.py
    python benchmarks/bench_match.py --sizes 100 1000 --torch-max-nodes 0
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch import fx, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The generated families live in benchmarks/models.py (the suite uses them
# too); they are imported here under their old names.
from benchmarks.models import (
    FAMILIES,
    BasicBlock,
    EncoderLayer,
    ResNetLike,
    TransformerLike,
    model_with_about,
)
from fxns.graph import build_op_graph
from fxns.match import Matching, match_graphs
from fxns.quantize import quiet_torch_ao
from fxns.trace import trace

DEFAULT_SIZES = (100, 300, 1000, 3000, 10000)

__all__ = [
    "FAMILIES",
    "BasicBlock",
    "EncoderLayer",
    "ResNetLike",
    "TransformerLike",
    "best_of",
    "fxns_match",
    "main",
    "measure",
    "model_with_about",
    "quantized",
    "torch_ns_match",
]

# --- timing ----------------------------------------------------------------------


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, float]:
    """The shortest wall-clock and CPU times of ``repeat`` calls, in seconds.

    CPU time (this process only) is the steadier figure on a shared machine.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def fxns_match(float_gm: fx.GraphModule, quant_gm: fx.GraphModule) -> Matching:
    """fxns's matching of two traced graphs."""
    return match_graphs(build_op_graph(float_gm), build_op_graph(quant_gm))


def torch_ns_match(float_gm: fx.GraphModule, quant_gm: fx.GraphModule) -> int:
    """torch.ao.ns's matching of the same graphs; returns the number of pairs."""
    from torch.ao.ns.fx.graph_matcher import get_matching_subgraph_pairs

    with quiet_torch_ao():
        return len(get_matching_subgraph_pairs(float_gm, quant_gm))


def measure(
    label: str,
    float_model: nn.Module,
    quant_model: nn.Module,
    repeat: int,
    torch_max_nodes: int,
) -> dict[str, Any]:
    """One row of the table."""
    float_gm = trace(float_model)
    quant_gm = trace(quant_model)
    n_nodes = len(float_gm.graph.nodes)
    matching = fxns_match(float_gm, quant_gm)
    wall, cpu = best_of(repeat, lambda: fxns_match(float_gm, quant_gm))

    torch_s: float | None = None
    torch_pairs: int | str = "skipped"
    if n_nodes <= torch_max_nodes:
        start = time.perf_counter()
        try:
            torch_pairs = torch_ns_match(float_gm, quant_gm)
            torch_s = time.perf_counter() - start
        except Exception as err:  # the prior art fails on some graphs
            torch_pairs = f"failed: {type(err).__name__}"
    return {
        "model": label,
        "fx nodes": n_nodes,
        "fxns ms": round(wall * 1e3, 1),
        "fxns CPU ms": round(cpu * 1e3, 1),
        "µs/node": round(wall * 1e6 / n_nodes, 1),
        "pairs": len(matching.pairs),
        "unmatched": len(matching.unmatched_float) + len(matching.unmatched_quant),
        "torch.ao.ns ms": "skipped" if torch_s is None else round(torch_s * 1e3),
        "its pairs": torch_pairs,
        "speed-up": "" if torch_s is None else f"{torch_s / wall:.0f}x",
        "_seconds": wall,
    }


def quantized(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """FX-quantized for x86, with min/max observers to keep calibration quick.

    The observers decide scales, not the graph: ``convert_fx`` builds the
    same graph as with the default (histogram) observers.
    """
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import (
        MinMaxObserver,
        default_per_channel_weight_observer,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = QConfig(
            activation=MinMaxObserver.with_args(reduce_range=True),
            weight=default_per_channel_weight_observer,
        )
        mapping = get_default_qconfig_mapping("x86").set_global(qconfig)
        prepared = prepare_fx(copy.deepcopy(model), mapping, (example,))
        with torch.no_grad():
            prepared(example)
        return convert_fx(prepared)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--torch-max-nodes",
        type=int,
        default=1100,
        help="run torch.ao.ns's matcher only on graphs up to this many nodes",
    )
    parser.add_argument("--no-resnet50", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    # Quantizing the big models is much slower with threads competing.
    torch.set_num_threads(1)

    rows = []
    if not args.no_resnet50:
        import torchvision

        resnet50 = torchvision.models.resnet50().eval()
        example = torch.randn(1, 3, 32, 32)
        rows.append(
            measure(
                "torchvision resnet50",
                resnet50,
                quantized(resnet50, example),
                args.repeat,
                args.torch_max_nodes,
            )
        )
    for family in args.families:
        for size in args.sizes:
            model, example = model_with_about(family, size)
            rows.append(
                measure(
                    family,
                    model,
                    quantized(model, example),
                    args.repeat,
                    args.torch_max_nodes,
                )
            )

    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__}; best of {args.repeat} runs"
    )
    table = [{k: v for k, v in r.items() if k != "_seconds"} for r in rows]
    print(tabulate(table, headers="keys", disable_numparse=True))
    print()
    for family in args.families:
        family_rows = [r for r in rows if r["model"] == family]
        if len(family_rows) >= 2:
            a, b = family_rows[0], family_rows[-1]
            exponent = math.log(b["_seconds"] / a["_seconds"]) / math.log(
                b["fx nodes"] / a["fx nodes"]
            )
            print(
                f"{family}: time grows as nodes^{exponent:.2f} from "
                f"{a['fx nodes']} to {b['fx nodes']} nodes (1.00 is linear)"
            )
    for row in rows:
        if row["model"] == "torchvision resnet50":
            verdict = "met" if row["_seconds"] < 0.050 else "MISSED"
            print(f"target resnet50 under 50 ms: {verdict} ({row['fxns ms']} ms)")
    for row in rows:
        if row["fx nodes"] >= 9000:
            verdict = "met" if row["_seconds"] < 2.0 else "MISSED"
            print(
                f"target {row['fx nodes']} nodes ({row['model']}) under 2 s: "
                f"{verdict} ({row['fxns ms']} ms)"
            )


if __name__ == "__main__":
    main()
