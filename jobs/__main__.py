"""`python -m jobs ...` is the same as the `microcal-hpc` console script."""
from jobs.cli import main

raise SystemExit(main())
