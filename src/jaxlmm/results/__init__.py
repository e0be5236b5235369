"""The results layer (lme4's ``mkMerMod``): fitted models as tables.

One result type per model class: ``LmerResult`` (``lmer_result``: lme4's models, theta the
relative Cholesky factor), ``StructuredResult`` (``structured_result``: structured covariances and
``dispformula``, theta the structures' own absolute parameters) -- both ``LinearMixedResult``
(``linear_result``: what the two share, fixed effects, fitted values, tests, summaries) -- and
``GlmerResult`` (``glmer_result``); ``BatchResult`` (``batch_result``) and ``GlmmBatchResult`` for many
responses, with variance components (``varcorr``), printed
summaries (``summary``) and predictions (``predict``).  Their methods call the
inference layer below them; refits go through the ``Model`` the result holds.
"""
