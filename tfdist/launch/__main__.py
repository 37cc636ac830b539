"""``python -m tfdist.launch``: the same as the ``tfdist-launch`` console script."""

import sys

from tfdist.launch.cli import main

if __name__ == "__main__":
    sys.exit(main())
