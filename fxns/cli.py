"""The ``fxns`` command line.

``fxns demo`` trains, quantizes and compares a built-in model, with nothing
to download.

Every error prints one line on stderr, ``fxns: error: ...``, and exits with a
non-zero status: 2 for a usage mistake or an :class:`~fxns.errors.FxnsError`
(whose message names the culprit and the fix), 1 for anything unexpected
(``-v`` adds the traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from .errors import FxnsError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Example:
        >>> main(["demo", "--train-seconds", "1"])  # doctest: +SKIP
        0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.run(args))
    except FxnsError as err:
        _error(str(err))
        return 2
    except KeyboardInterrupt:
        print("fxns: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.verbose:
            traceback.print_exc()
        _error(
            f"{type(err).__name__}: {err}"
            + ("" if args.verbose else " (run with -v for the traceback)")
        )
        return 1


def _error(message: str) -> None:
    """Print ``message`` as one line on stderr."""
    line = " ".join(part.strip() for part in str(message).splitlines())
    print(f"fxns: error: {line}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like fxns's own."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fxns",
        description=(
            "Find the layer where a quantized PyTorch model departs from its "
            "float twin."
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress at INFO level"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train, quantize and compare a built-in CNN (no downloads)",
        description=(
            "Train a small CNN (residual add, cat, squeeze-excite mul, conv+bn+relu) "
            "on synthetic images, quantize it with prepare_fx/convert_fx and print "
            "fxns's weight, shadow and propagated comparisons."
        ),
    )
    demo.add_argument(
        "--train-seconds",
        type=float,
        default=8.0,
        help="training time budget (default 8)",
    )
    demo.add_argument(
        "--top", type=int, default=None, help="show only the N worst layers"
    )
    demo.set_defaults(run=_run_demo)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    print("fxns demo: training a small CNN on synthetic images ...", flush=True)
    result = run_demo(train_seconds=args.train_seconds)
    sort = "sqnr" if args.top else None
    print(
        f"float accuracy {result.float_accuracy:.1%}, "
        f"quantized (x86, prepare_fx/convert_fx) accuracy {result.quant_accuracy:.1%}\n"
    )
    print(result.weights.table(sort_by=sort, top=args.top), end="\n\n")
    print(result.shadow.table(sort_by=sort, top=args.top), end="\n\n")
    print(result.propagated.table(sort_by=sort, top=args.top), end="\n\n")
    worst = result.shadow.sorted_rows("sqnr", top=1)
    if worst:
        row = worst[0]
        print(
            f"Largest own error (shadow): {row.name} ({row.kind}), "
            f"{row.metrics['sqnr']:.1f} dB. Done in {result.seconds:.0f} s."
        )
    return 0
