"""`python -m jpm_core`: the `jpm-simulate` command line (see `jpm-simulate --help`)."""

from jpm_core._src.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
