"""The results layer (lme4's ``mkMerMod``): fitted models as tables.

``LmerResult`` (``lmer_result``) for one response and ``BatchResult``
(``batch_result``) for many, with variance components (``varcorr``), printed
summaries (``summary``) and predictions (``predict``).  Their methods call the
inference layer below them; refits go through the ``Model`` the result holds.
"""
