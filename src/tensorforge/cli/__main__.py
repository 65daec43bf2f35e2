"""`python -m tensorforge.cli ...`, as the single-file cli.py allowed (`python -m tensorforge` is the same)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
