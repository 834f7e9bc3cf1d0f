"""``python -m gwlab``: the same as the ``gwlab`` command."""

import sys

from gwlab.entry import main

if __name__ == "__main__":
    sys.exit(main())
