"""``python -m fpsim``: the command line (see :mod:`fpsim.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
