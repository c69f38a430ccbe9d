"""`python -m microcal_hpc ...` is the same as the `microcal-hpc` console script."""
from microcal_hpc.cli import main

raise SystemExit(main())
