"""core.multivariate: multivariate (multi-trait) linear mixed models, ``Y = X B + Z G + E``.

``vec(G) ~ N(0, Sigma_g (x) K)`` and ``vec(E) ~ N(0, Sigma_e (x) I)``: ``covariance.py`` (the structures
of ``Sigma_g`` and ``Sigma_e`` as functions of their parameters), ``data.py`` (one eigendecomposition of
``Z K Z^T`` and the missing entries), ``criterion.py`` (the exact REML/ML criterion of the observed
entries and the estimates at a parameter vector), ``programs.py`` (value, gradient and Hessian; the
host driver of the Newton kernel).
"""
