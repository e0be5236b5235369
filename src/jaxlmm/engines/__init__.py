"""The engines that evaluate and fit each class of model, and the one function that chooses among them.

``base.Engine`` states the interface; ``select.select_engine`` is the only place that reads what tells
the classes apart.  See docs/architecture.md, "Engines".
"""

from .base import Engine
from .lme4_engines import BlockedEngine, DenseEngine
from .marginal_engine import MarginalEngine
from .select import select_engine

__all__ = ["Engine", "BlockedEngine", "DenseEngine", "MarginalEngine", "select_engine"]
