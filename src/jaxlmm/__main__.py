"""``python -m jaxlmm``: the command line (``jaxlmm.cli.main``)."""

from .cli.main import run

run()
