"""``python -m tfdist.cluster``; see `tfdist.cluster.cli`."""

import sys

from tfdist.cluster.cli import main

sys.exit(main())
