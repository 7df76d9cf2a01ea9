"""The ``fxns`` command line.

``fxns compare|weights|diff|variants|sensitivity MODEL`` runs one of fxns's
analyses on a model named as ``package.module:factory`` or
``path/to/file.py:factory``. The factory is called with no arguments and
returns the float model, or ``(float model, quantized model)``, or
``(float model, quantized model, example batches)``; for ``variants`` the
quantized model may be a dict of name → quantized model. When it returns no
quantized model, fxns quantizes the float one with ``prepare_fx`` and
``convert_fx`` for ``--backend``, calibrating on the example batches; without
example batches, ``--input-shape`` makes random ones. ``--input-index N`` picks
the model input out of batches that hold more (``(image, label)`` pairs), and
``--seed`` seeds torch and Python before the factory is called, so that a run
gives the same numbers every time.

``fxns demo`` trains, quantizes and compares a built-in model, with nothing
to download. Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import operator
import random
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from .compare import CONVERT_BATCHES, CONVERT_YOURS, INPUT_FN_CONTRACT, PICK_INPUTS
from .errors import ArgumentError, DataError, FxnsError, ModelError

__all__ = ["FORMATS", "LoadedModel", "load_model", "main"]

logger = logging.getLogger(__name__)

# Output formats of the analyses.
FORMATS = ("table", "json", "csv", "html", "markdown")
DIFF_FORMATS = ("table", "markdown", "html")

# Backends the command line offers (see fxns.quantize.BACKENDS).
CLI_BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn", "dynamic")

# Random batches made from --input-shape when the factory gives none.
DEFAULT_BATCHES = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Example:
        >>> main(["compare", "torchvision.models:resnet18",
        ...       "--input-shape", "1,3,64,64"])  # doctest: +SKIP
        0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="fxns: %(message)s",
    )
    try:
        _check_output(getattr(args, "output", None))
        return int(args.run(args))
    except DataError as err:
        _fail(DataError(_cli_advice(str(err), args)), args.verbose, cause=err)
        return 2
    except FxnsError as err:
        _fail(err, args.verbose)
        return 2
    except KeyboardInterrupt:
        print("fxns: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        _fail(err, args.verbose, internal=True)
        return 1


@dataclass
class LoadedModel:
    """What a model factory returned, put in order."""

    # The float model, in eval mode.
    float_model: nn.Module
    # The quantized model(s) it returned: one model, a dict of variants, or
    # None when fxns should quantize the float model itself.
    quantized: nn.Module | dict[str, nn.Module] | None
    # Example batches it returned, or None.
    batches: list[Any] | None


def load_model(spec: str, seed: int | None = None) -> LoadedModel:
    """Import ``package.module:factory`` or ``path/to/file.py:factory`` and call it.

    Args:
        spec: where the factory is.
        seed: seed torch's and Python's random number generators with this
            before calling the factory, so that a factory that makes random
            weights or data makes the same ones on every run.

    Raises:
        ModelError: the spec is malformed, the import or the call fails, or
            the factory returns something other than a model, a (float,
            quantized) pair or a (float, quantized, batches) triple.

    Example:
        >>> loaded = load_model("torchvision.models:resnet18")  # doctest: +SKIP
        >>> loaded.quantized is None  # doctest: +SKIP
        True
    """
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ModelError(
            f"MODEL must be package.module:factory or path/to/file.py:factory, "
            f"got {spec!r}"
        )
    module = _import(where, spec)
    factory: Any = module
    for part in name.split("."):
        if not hasattr(factory, part):
            raise ModelError(f"{where} has no attribute {name!r} (from MODEL {spec!r})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ModelError(f"{spec} is a {type(factory).__name__}, not a factory")
    if seed is not None:
        _seed(seed)
    try:
        result = factory()
    except Exception as err:
        raise ModelError(
            f"the factory {spec} failed: {type(err).__name__}: {_first_line(err)}"
        ) from err
    return _unpack(result, spec)


# --- the commands -----------------------------------------------------------------


def _run_compare(args: argparse.Namespace) -> int:
    from .compare import compare_activations

    loaded = load_model(args.model, args.seed)
    batches = _batches(loaded, args)
    with _engine(_engine_for(args.backend, loaded)):
        quant = _single_quantized(loaded, args, batches)
        report = compare_activations(
            loaded.float_model, quant, batches, mode=args.mode, input_fn=_input_fn(args)
        )
        graph = None
        if args.format == "html":
            from .diff import diff as graph_diff

            graph = graph_diff(loaded.float_model, quant)
    _emit_report(report, args, graph)
    return 0


def _run_weights(args: argparse.Namespace) -> int:
    from .compare import compare_weights

    loaded = load_model(args.model, args.seed)
    batches = _batches(loaded, args) if loaded.quantized is None else []
    with _engine(_engine_for(args.backend, loaded)):
        quant = _single_quantized(loaded, args, batches)
        report = compare_weights(loaded.float_model, quant)
    _emit_report(report, args)
    return 0


def _run_diff(args: argparse.Namespace) -> int:
    from .diff import diff as graph_diff

    loaded = load_model(args.model, args.seed)
    batches = _batches(loaded, args) if loaded.quantized is None else []
    with _engine(_engine_for(args.backend, loaded)):
        quant = _single_quantized(loaded, args, batches)
        result = graph_diff(loaded.float_model, quant)
    if args.format == "markdown":
        text = result.to_markdown()
    elif args.format == "html":
        from .html import diff_page

        text = diff_page(result)
    else:
        text = str(result)
    _write(text, args.output)
    return 0


def _run_variants(args: argparse.Namespace) -> int:
    from .compare import compare_activations
    from .quantize import quantize_fx
    from .report import VariantReport
    from .variants import float_layers

    loaded = load_model(args.model, args.seed)
    batches = _batches(loaded, args)
    reports = {}
    given = loaded.quantized
    if isinstance(given, dict):
        for name, quant in given.items():
            reports[name] = compare_activations(
                loaded.float_model,
                quant,
                batches,
                mode=args.mode,
                input_fn=_input_fn(args),
            )
    else:
        if given is not None:
            reports["given"] = compare_activations(
                loaded.float_model,
                given,
                batches,
                mode=args.mode,
                input_fn=_input_fn(args),
            )
        backends = args.backend or ["x86"]
        fusions = args.fusion or (["all", "none"] if len(backends) == 1 else ["all"])
        for backend in backends:
            for fusion in fusions:
                name = _variant_name(backend, fusion, backends, fusions)
                with _engine(_static_engine(backend)):
                    quant = quantize_fx(
                        loaded.float_model,
                        _model_inputs(batches, args),
                        backend,
                        fusion=fusion,
                    )
                    reports[name] = compare_activations(
                        loaded.float_model,
                        quant,
                        batches,
                        mode=args.mode,
                        input_fn=_input_fn(args),
                    )
    v = VariantReport(reports, float_layers(loaded.float_model))
    metrics = _split(args.metrics) or ["sqnr"]
    fmt = args.format
    if fmt in ("table", "markdown"):
        text = v.table(
            metrics,
            sort_by=args.sort,
            top=args.top,
            tablefmt="github" if fmt == "markdown" else "simple",
        )
    elif fmt == "json":
        text = v.to_json()
    elif fmt == "csv":
        text = v.to_csv()
    else:
        text = v.to_html()
    _write(text, args.output, v._title())
    return 0


def _run_sensitivity(args: argparse.Namespace) -> int:
    from .sensitivity import sensitivity

    loaded = load_model(args.model, args.seed)
    if loaded.quantized is not None:
        logger.warning(
            "sensitivity quantizes the float model itself with prepare_fx; "
            "the quantized model from %s is not used",
            args.model,
        )
    batches = _batches(loaded, args)
    backend = args.backend or "x86"
    with _engine(_static_engine(backend)):
        report = sensitivity(
            loaded.float_model,
            batches,
            backend=backend,
            fusion=args.fusion or "all",
            layers=_split(args.layers) or None,
            input_fn=_input_fn(args),
        )
    _emit_report(report, args)
    return 0


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


# --- the parser -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fxns",
        description=(
            "Find the layer where a quantized PyTorch model departs from its "
            "float twin."
        ),
        epilog=(
            "MODEL is package.module:factory or path/to/file.py:factory; the "
            "factory returns the float model, or (float, quantized), or (float, "
            "quantized, example batches). Example: fxns compare "
            "torchvision.models:resnet18 --input-shape 1,3,224,224"
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress at INFO level"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # -v also after the command; SUPPRESS keeps the one given before it.
    verbose = _Parser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log progress at INFO level",
    )

    model = _Parser(add_help=False, parents=[verbose])
    model.add_argument(
        "model", metavar="MODEL", help="package.module:factory or file.py:factory"
    )
    model.add_argument(
        "--input-shape",
        action="append",
        type=_shape,
        metavar="N,C,H,W",
        help="shape of random example inputs when the factory gives no batches "
        "(repeat for a model with several inputs)",
    )
    model.add_argument(
        "--batches",
        type=_positive,
        default=None,
        metavar="N",
        help=f"number of batches to use (default: all the factory gives, or "
        f"{DEFAULT_BATCHES} random ones)",
    )
    model.add_argument(
        "--input-index",
        type=_index,
        default=None,
        metavar="N",
        help="use element N of each batch the factory returns as the model input "
        "(e.g. 0 for (input, label) pairs)",
    )
    model.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of torch's and Python's random numbers, set before the factory "
        "is called (random weights) and for the random example inputs (default 0)",
    )
    model.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="write to PATH instead of standard output",
    )

    # A graph diff is a printout: no JSON or CSV form.
    report_format, diff_format = (
        _format_parser(formats) for formats in (FORMATS, DIFF_FORMATS)
    )

    one_backend = _Parser(add_help=False)
    one_backend.add_argument(
        "--backend",
        choices=CLI_BACKENDS,
        default=None,
        help="quantize the float model for this backend when the factory gives "
        "no quantized model (default x86), and run on its engine",
    )
    one_backend.add_argument(
        "--fusion",
        choices=("all", "conv_bn", "none"),
        default=None,
        help="what to fuse when fxns quantizes (default all)",
    )
    ranking = _Parser(add_help=False)
    ranking.add_argument("--sort", metavar="METRIC", help="sort worst first by METRIC")
    ranking.add_argument(
        "--top", type=_positive, metavar="N", help="keep the N first rows"
    )

    compare = sub.add_parser(
        "compare",
        parents=[model, report_format, one_backend, ranking],
        help="per-layer error of the activations",
        description="Run both models on the batches and report every matched "
        "layer's error.",
    )
    compare.add_argument(
        "--mode",
        choices=("shadow", "propagated"),
        default="shadow",
        help="shadow: each layer's own error; propagated: with everything "
        "upstream quantized (default shadow)",
    )
    compare.set_defaults(run=_run_compare)

    weights = sub.add_parser(
        "weights",
        parents=[model, report_format, one_backend, ranking],
        help="per-layer error of the weights",
        description="Compare every matched weight with its quantized twin.",
    )
    weights.set_defaults(run=_run_weights)

    diff = sub.add_parser(
        "diff",
        parents=[model, diff_format, one_backend],
        help="the two graphs side by side",
        description="Print how the quantized graph differs from the float one.",
    )
    diff.set_defaults(run=_run_diff)

    variants = sub.add_parser(
        "variants",
        parents=[model, report_format, ranking],
        help="several quantized variants side by side",
        description="Quantize the float model several ways (every --backend with "
        "every --fusion; default x86 with fusion all and none), or take the "
        "variants the factory returns as a dict, and compare them layer by layer.",
    )
    variants.add_argument(
        "--backend", action="append", choices=CLI_BACKENDS, help="repeat for several"
    )
    variants.add_argument(
        "--fusion",
        action="append",
        choices=("all", "conv_bn", "none"),
        help="repeat for several",
    )
    variants.add_argument(
        "--mode",
        choices=("shadow", "propagated"),
        default="propagated",
        help="default propagated: each layer's error with everything upstream "
        "quantized",
    )
    variants.add_argument(
        "--metrics", default="sqnr", metavar="M,M", help="metric columns (default sqnr)"
    )
    variants.set_defaults(run=_run_variants)

    sens = sub.add_parser(
        "sensitivity",
        parents=[model, report_format, one_backend, ranking],
        help="which layers to keep in float",
        description="For each layer, the end-to-end SQNR with only that layer "
        "in float and with only that layer quantized, on real quantized kernels. "
        "Costs two prepare_fx/convert_fx and two runs over the batches per layer.",
    )
    sens.add_argument("--layers", metavar="NAME,NAME", help="only these layers")
    sens.set_defaults(run=_run_sensitivity)

    demo = sub.add_parser(
        "demo",
        parents=[verbose],
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


def _format_parser(formats: tuple[str, ...]) -> _Parser:
    parser = _Parser(add_help=False)
    parser.add_argument(
        "--format",
        choices=formats,
        default="table",
        help="output format (default table)",
    )
    return parser


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid shape {text!r}: give sizes separated by commas, e.g. 1,3,224,224"
        ) from None
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(
            f"invalid shape {text!r}: sizes must be positive, e.g. 1,3,224,224"
        )
    return shape


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid index {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid index {text!r}: must be 0 or more")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be positive")
    return value


# --- helpers ----------------------------------------------------------------------


def _import(where: str, spec: str) -> Any:
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise ModelError(f"no file {where} (from MODEL {spec!r})")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ModelError(f"cannot import {where} as Python (from MODEL {spec!r})")
        module = importlib.util.module_from_spec(module_spec)
        # The file's own directory, for its imports of modules beside it.
        sys.path.insert(0, str(path.resolve().parent))
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:
            raise ModelError(
                f"importing {where} failed: {type(err).__name__}: {_first_line(err)}"
            ) from err
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    try:
        return importlib.import_module(where)
    except Exception as err:
        raise ModelError(
            f"cannot import {where} (from MODEL {spec!r}): "
            f"{type(err).__name__}: {_first_line(err)}"
        ) from err


def _unpack(result: Any, spec: str) -> LoadedModel:
    items = result if isinstance(result, tuple) else (result,)
    if not 1 <= len(items) <= 3:
        raise ModelError(
            f"the factory {spec} returned {len(items)} items; return the float "
            "model, (float, quantized) or (float, quantized, batches)"
        )
    float_model, quantized, batches = (*items, None, None)[:3]
    if not isinstance(float_model, nn.Module):
        raise ModelError(
            f"the factory {spec} returned a {type(float_model).__name__} as the "
            "float model; return a torch.nn.Module"
        )
    if quantized is not None and not isinstance(quantized, nn.Module | Mapping):
        raise ModelError(
            f"the factory {spec} returned a {type(quantized).__name__} as the "
            "quantized model; return a torch.nn.Module, a dict of them, or None"
        )
    # Factories such as torchvision's build models in training mode.
    float_model.eval()
    if isinstance(quantized, nn.Module):
        quantized.eval()
    return LoadedModel(
        float_model=float_model,
        quantized=dict(quantized) if isinstance(quantized, Mapping) else quantized,
        batches=list(batches) if batches is not None else None,
    )


def _batches(loaded: LoadedModel, args: argparse.Namespace) -> list[Any]:
    if loaded.batches is not None:
        if args.input_shape:
            logger.warning(
                "the factory %s returns example batches; --input-shape is not used",
                args.model,
            )
        batches = loaded.batches[: args.batches] if args.batches else loaded.batches
        if not batches:
            raise DataError(f"the factory {args.model} returned no example batches")
        if args.input_index is not None and isinstance(batches[0], torch.Tensor):
            raise ArgumentError(
                f"--input-index picks an element of each batch, but the factory "
                f"{args.model} returns batches that are tensors (model inputs "
                "already), not tuples: drop --input-index"
            )
        _check_first_batch(loaded.float_model, batches[0], args)
        return batches
    if not args.input_shape:
        raise DataError(
            f"the factory {args.model} returns no example batches: give "
            "--input-shape (e.g. --input-shape 1,3,224,224)"
        )
    if args.input_index is not None:
        raise ArgumentError(
            "--input-index picks the model input out of the batches the factory "
            "returns; the random batches of --input-shape are model inputs already"
        )
    # Data errors about these batches may come from a missing batch dimension.
    args.random_batches = True
    g = torch.Generator().manual_seed(args.seed)
    count = args.batches or DEFAULT_BATCHES
    shapes = args.input_shape
    return [
        tuple(torch.randn(s, generator=g) for s in shapes)
        if len(shapes) > 1
        else torch.randn(shapes[0], generator=g)
        for _ in range(count)
    ]


def _check_first_batch(model: nn.Module, batch: Any, args: argparse.Namespace) -> None:
    """Fail early, before quantizing, if the factory's batches do not give the
    model's arguments (``(input, label)`` pairs without ``--input-index``)."""
    from .compare import _n_inputs, model_args
    from .trace import trace

    try:
        n_inputs = _n_inputs(trace(model, role="float model"))
    except FxnsError:
        return  # the analysis itself says what is wrong with the model
    model_args(batch, 0, _input_fn(args), n_inputs)


def _input_fn(args: argparse.Namespace) -> Callable[[Any], Any] | None:
    """What ``--input-index`` makes of each batch (None: the batch itself)."""
    if args.input_index is None:
        return None
    return operator.itemgetter(args.input_index)


def _model_inputs(batches: list[Any], args: argparse.Namespace) -> list[Any]:
    pick = _input_fn(args)
    if pick is None:
        return batches
    try:
        return [pick(b) for b in batches]
    except (IndexError, KeyError, TypeError) as err:
        raise DataError(
            f"--input-index {args.input_index} does not pick an element of every "
            f"batch: {type(err).__name__}: {_first_line(err)}"
        ) from err


def _cli_advice(message: str, args: argparse.Namespace) -> str:
    """A data error's message, its advice in command-line terms."""
    for python, command_line in _ADVICE.items():
        message = message.replace(python, command_line)
    index = getattr(args, "input_index", None)
    if index is not None:
        message = message.replace(
            INPUT_FN_CONTRACT, f"every batch must have an element {index}"
        ).replace("input_fn", f"--input-index {index}")
    if getattr(args, "random_batches", False):
        if "positional argument" in message or "model argument" in message:
            message += (
                f" (fxns made {len(args.input_shape)} input(s), one per "
                "--input-shape: give --input-shape once for each input the "
                "model's forward takes)"
            )
        elif len(args.input_shape) == 1:
            shape = ",".join(map(str, args.input_shape[0]))
            message += (
                f" (--input-shape includes the batch dimension: if {shape} is one "
                f"sample, give --input-shape 1,{shape})"
            )
    return message


# The advice of fxns's data errors, worded for the command line.
_ADVICE = {
    PICK_INPUTS: "pick the model input out of each batch with --input-index N "
    "(e.g. --input-index 0 for (input, label) pairs), or make the factory "
    "return model inputs",
    CONVERT_BATCHES: "or make the factory return batches the model takes "
    "(--input-index N picks element N of each batch)",
    CONVERT_YOURS: "(make the factory return such batches, or pick one element "
    "of each with --input-index N)",
}


def _check_output(output: str | None) -> None:
    """Fail before any work if ``--output`` cannot be written."""
    if output is None:
        return
    parent = Path(output).parent
    if not parent.is_dir():
        raise ArgumentError(
            f"cannot write --output {output}: there is no directory {parent}; "
            "create it first"
        )
    if Path(output).is_dir():
        raise ArgumentError(f"cannot write --output {output}: it is a directory")


def _seed(seed: int) -> None:
    """Seed every random number generator a factory is likely to use."""
    random.seed(seed)
    torch.manual_seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def _single_quantized(
    loaded: LoadedModel, args: argparse.Namespace, batches: list[Any]
) -> nn.Module:
    from .quantize import quantize_fx

    if isinstance(loaded.quantized, nn.Module):
        return loaded.quantized
    if isinstance(loaded.quantized, dict):
        raise ModelError(
            f"the factory {args.model} returns several quantized models; "
            "use `fxns variants` to compare them"
        )
    if not batches:
        raise DataError(
            f"the factory {args.model} returns no quantized model and no batches "
            "to calibrate one on: give --input-shape"
        )
    return quantize_fx(
        loaded.float_model,
        _model_inputs(batches, args),
        args.backend or "x86",
        fusion=args.fusion or "all",
    )


def _engine_for(backend: str | None, loaded: LoadedModel) -> str | None:
    # A quantized model from the factory runs on the engine it was made for,
    # which only its author knows: keep the current one unless told.
    if backend is None and loaded.quantized is not None:
        return None
    return _static_engine(backend or "x86")


def _static_engine(backend: str) -> str | None:
    if backend == "dynamic":
        return None
    return backend


@contextlib.contextmanager
def _engine(name: str | None) -> Iterator[None]:
    """Run on the quantized engine ``name`` (None: leave it as it is)."""
    previous = torch.backends.quantized.engine
    if name is not None and name != previous:
        if name not in torch.backends.quantized.supported_engines:
            raise FxnsError(
                f"backend {name} is not available in this PyTorch build; it has "
                f"{', '.join(torch.backends.quantized.supported_engines)}"
            )
        torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _variant_name(
    backend: str, fusion: str, backends: Sequence[str], fusions: Sequence[str]
) -> str:
    if len(backends) == 1:
        return f"fusion={fusion}" if len(fusions) > 1 else backend
    return backend if len(fusions) == 1 else f"{backend}/{fusion}"


def _emit_report(report: Any, args: argparse.Namespace, graph: Any = None) -> None:
    from .report import Report

    fmt = args.format
    if fmt in ("table", "markdown"):
        text = report.table(
            sort_by=args.sort,
            top=args.top,
            tablefmt="github" if fmt == "markdown" else "simple",
        )
        _write(text, args.output, report.summary())
        return
    if args.sort or args.top:
        report = Report(
            report.sorted_rows(args.sort, args.top), mode=report.mode, meta=report.meta
        )
    if fmt == "json":
        text = report.to_json()
    elif fmt == "csv":
        text = report.to_csv()
    else:
        text = report.to_html(diff=graph) if graph is not None else report.to_html()
    _write(text, args.output, report.summary())


def _write(text: str, output: str | None, summary: str = "") -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        Path(output).write_text(
            text if text.endswith("\n") else text + "\n", encoding="utf-8"
        )
    except OSError as err:
        raise FxnsError(f"cannot write {output}: {err.strerror or err}") from err
    print(f"fxns: wrote {output}" + (f" ({summary})" if summary else ""))


def _split(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _fail(
    err: BaseException,
    verbose: bool,
    internal: bool = False,
    cause: BaseException | None = None,
) -> None:
    if verbose:
        traceback.print_exception(cause or err, file=sys.stderr)
    kind = f"{type(err).__name__}: " if internal else ""
    hint = " (run with -v for the traceback)" if internal and not verbose else ""
    print(f"fxns: error: {kind}{_first_line(err)}{hint}", file=sys.stderr)


def _first_line(err: BaseException) -> str:
    """The message of ``err`` on one line (its lines joined by spaces)."""
    text = " ".join(part.strip() for part in str(err).strip().splitlines())
    return text or type(err).__name__
