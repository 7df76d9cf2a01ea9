"""``python -m benchmarks``: the benchmark suite (``benchmarks/suite.py``)."""

from __future__ import annotations

import sys

from benchmarks.suite import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
