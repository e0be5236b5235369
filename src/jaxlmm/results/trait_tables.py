"""What every result of many traits shares: tables with one row per trait (``BatchResult``,
``StructuredBatchResult``)."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd


class TraitTables:
    """Per-trait tables indexed by ``traits``; ``_valid`` marks the traits that were fitted."""

    traits: list
    design: object
    _valid: np.ndarray

    def _series(self, values, name: str) -> pd.Series:
        return pd.Series(values, index=pd.Index(self.traits, name="trait"), name=name)

    def _frame(self, values, columns) -> pd.DataFrame:
        return pd.DataFrame(values, index=pd.Index(self.traits, name="trait"), columns=columns)

    def _masked(self, values) -> np.ndarray:
        """``values`` as floats, NaN for the traits that were not fitted."""
        values = np.asarray(values, dtype=float).copy()
        values[~self._valid] = np.nan
        return values

    @property
    def n_traits(self) -> int:
        return len(self.traits)

    @property
    def formula(self) -> str:
        return self.design.formula.text

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """Variances per trait (traits x components): ``vcov`` of ``varcorr`` made wide, columns
        named by group (``id``, ``Residual``) or ``group.column`` for a term's other columns."""
        vc = self.varcorr
        vc = vc[vc["var2"] == ""]
        plain = vc["var1"].isin(["", "(Intercept)"])
        label = np.where(plain, vc["grp"], vc["grp"] + "." + vc["var1"])
        wide = vc.assign(component=label).pivot(index="trait", columns="component", values="vcov")
        return wide.loc[self.traits, list(dict.fromkeys(label))]

    def to_csv(self, path, **kwargs) -> None:
        self.to_frame().to_csv(path, **kwargs)

    def _index(self, trait) -> int:
        """The position of ``trait`` (a name, or an index that may be negative)."""
        if isinstance(trait, (int, np.integer)) and not isinstance(trait, bool):
            if not -self.n_traits <= trait < self.n_traits:
                raise IndexError(f"trait index {trait} out of range for {self.n_traits} traits")
            return int(trait) % self.n_traits
        try:
            return self.traits.index(trait)
        except ValueError:
            raise KeyError(f"no trait named {trait!r}") from None
