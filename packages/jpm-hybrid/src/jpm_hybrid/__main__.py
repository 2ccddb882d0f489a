"""`python -m jpm_hybrid`: the `jpm-hybrid` command line."""

from jpm_hybrid._src.cli import main

raise SystemExit(main())
