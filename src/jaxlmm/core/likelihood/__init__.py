"""core.likelihood: the Gaussian criteria and the inference formulas written once for every engine.

- ``criteria``: the REML criterion / ML deviance in its three parametrizations -- sigma profiled
  on a factorization's parts (lme4's), sigma explicit (lmerTest's ``devfun_vp``), and absolute
  (the marginal criterion of structured models);
- ``ddf_parts``: Satterthwaite's ingredients from a deviance and a covariance of beta, and
  Kenward-Roger's adjusted covariance from the derivatives of ``M = X^T V^-1 X``.

Each engine computes its own parts (a blocked or dense factorization, K's eigenbasis, an n x n
marginal covariance) and hands them to these functions; none of them writes the formulas again.
"""
