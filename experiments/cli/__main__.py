"""``python -m experiments.cli``: the same as ``iclwb``."""

from experiments.cli.main import main

raise SystemExit(main())
