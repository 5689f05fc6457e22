"""``python -m stainlab``: the command line, as the ``stainlab`` script runs it."""

import sys

from stainlab.cli import main

sys.exit(main())
