"""``python -m roformer_demo``: the main job (see :mod:`roformer_demo.cli`)."""

import sys

from roformer_demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
