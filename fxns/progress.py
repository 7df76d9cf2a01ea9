"""Progress bars for long runs: shown on a terminal, silent everywhere else.

Comparisons over many batches, and sensitivity analyses that re-quantize a
model once per layer, take a while. :func:`progress` wraps their loops in a
``tqdm`` bar when standard error is a terminal and there are more than a few
steps; in logs, notebooks' captured output, CI and tests it adds nothing.
``TQDM_DISABLE=1`` turns the bars off everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

__all__ = ["FEW_STEPS", "count_batches", "progress"]

T = TypeVar("T")

# Loops of at most this many steps finish before a bar would be read.
FEW_STEPS = 3

# A loop of unknown length shows its bar only once it has run this long (s).
_UNKNOWN_LENGTH_DELAY = 2.0


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "fxns",
    unit: str = "batch",
    file: TextIO | None = None,
) -> Iterator[T]:
    """Iterate over ``iterable``, with a progress bar on a terminal.

    Args:
        iterable: the steps.
        total: the number of steps, if ``len(iterable)`` does not tell it.
        desc: the bar's label.
        unit: what one step is called.
        file: where the bar goes (default: standard error, looked up when
            called so that redirections apply).

    Returns:
        An iterator over the same items. The bar is shown only if ``file`` is
        a terminal and there are more than :data:`FEW_STEPS` steps (a loop of
        unknown length shows it after a couple of seconds).

    Example:
        >>> sum(progress(range(10), desc="adding"))
        45
    """
    if total is None:
        total = _length(iterable)
    stream = file if file is not None else sys.stderr
    if (total is not None and total <= FEW_STEPS) or not _is_terminal(stream):
        yield from iterable
        return
    bar = tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=stream,
        leave=False,
        dynamic_ncols=True,
        delay=0.0 if total is not None else _UNKNOWN_LENGTH_DELAY,
    )
    try:
        yield from bar
    finally:
        bar.close()


def count_batches(data: Any) -> int | None:
    """How many batches ``data`` holds, when that is known without iterating.

    Example:
        >>> count_batches([1, 2, 3]), count_batches(iter([1, 2]))
        (3, None)
    """
    import torch

    if isinstance(data, torch.Tensor | tuple | Mapping):
        return 1
    return _length(data)


def _length(iterable: object) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False
