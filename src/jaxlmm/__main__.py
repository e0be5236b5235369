"""``python -m jaxlmm``: the command line (``jaxlmm.cli``)."""

from .cli import run

run()
