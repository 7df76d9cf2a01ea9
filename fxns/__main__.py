"""``python -m fxns``: the command line."""

from .cli import main

raise SystemExit(main())
