"""The model layer (lme4's ``lFormula``): formula and data frame -> arrays and names.

Pandas and formulaic live here and above, never in ``jaxlmm.core``.  The
formula is tokenized into an allow-listed grammar (``formula_grammar``),
parsed (``formula``), and evaluated against the data into a ``Design``
(``design``): the fixed-effects matrix (``model_matrix``, ``aliasing``), one
``TermDesign`` per random term (``grouping``), the rows kept (``missing_rows``,
``data_checks``), relationship matrices (``relmat``, ``markers``), names
(``naming``), memory checks (``memory``, ``fixed_memory``) and the
factorization plan (``plan``).  Imports only ``jaxlmm.core`` and the base
modules (``errors``, ``_x64``, ``_config``).
"""
