"""``python -m jaxlmm``: the command line (``jaxlmm.cli``)."""

import sys

from .cli import main

sys.exit(main())
