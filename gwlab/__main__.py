"""``python -m gwlab``: the same as the ``gwlab`` command."""

import sys

from gwlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
