"""The one table of fit statuses: the optimizer's outcomes and a batch's per-trait checks.

Codes 0-7 are set by the optimizers (``optimize``, ``newton_host``); codes 10
and up by a batch's checks of each trait before it is fitted
(``jaxlmm.many.engine.trait_checks``).  Each code has a short name (a batch's
``status`` column) and a message (lme4-style warnings and ``diagnostics``).
The codes are plain ints (they enter compiled programs); ``Status`` is the same table
as an ``IntEnum`` whose ``str`` is the name (``LmerResult.status``).
"""

from __future__ import annotations

import enum

CONVERGED = 0
MAX_ITER = 1
LINE_SEARCH_FAILED = 2
NONFINITE = 3
NONFINITE_STEP = 4
CRITERION_ROSE = 5
NOT_IDENTIFIED = 6
UNBOUNDED = 7
SEPARATION = 8      # a binomial GLMM whose fitted probabilities reach 0 or 1 (core/glmm/driver.py)
TOO_FEW_OBSERVATIONS = 10
ONE_LEVEL = 11
LEVELS_VS_OBSERVATIONS = 12
X_RANK_DEFICIENT = 13
CONSTANT_RESPONSE = 14

STATUS_NAMES = {
    CONVERGED: "converged",
    MAX_ITER: "max_iter",
    LINE_SEARCH_FAILED: "line_search_failed",
    NONFINITE: "nonfinite",
    NONFINITE_STEP: "nonfinite_step",
    CRITERION_ROSE: "criterion_rose",
    NOT_IDENTIFIED: "not_identified",
    UNBOUNDED: "unbounded",
    SEPARATION: "separation",
    TOO_FEW_OBSERVATIONS: "too_few_observations",
    ONE_LEVEL: "one_level",
    LEVELS_VS_OBSERVATIONS: "levels_vs_observations",
    X_RANK_DEFICIENT: "x_rank_deficient",
    CONSTANT_RESPONSE: "constant_response",
}

# single fits: the optimizer's message (lme4's optimizer warnings)
OPTIMIZER_MESSAGES = {
    CONVERGED: "converged",
    MAX_ITER: "maximum number of iterations reached",
    LINE_SEARCH_FAILED: "line search failed to decrease the objective",
    NONFINITE: "objective not finite at the starting value",
    NONFINITE_STEP: "the optimizer proposed a non-finite step (check its learning rate or schedule); "
                    "the fit stopped at the last finite iterate",
    CRITERION_ROSE: "the optimizer ended at a higher criterion than it started from (check its learning rate "
                    "or schedule): not a minimum",
    NOT_IDENTIFIED: "unable to evaluate scaled gradient: the criterion is flat in theta at the estimate (the model "
                    "is unidentifiable: the data do not determine the variance parameters); theta is where the "
                    "optimizer stopped, and the standard errors are conditional on it",
    UNBOUNDED: "the criterion decreases without bound as theta grows (the model reproduces the data: the residual "
               "variance tends to 0): there is no optimum; theta is where the optimizer stopped",
    SEPARATION: "fitted probabilities numerically 0 or 1 occurred (complete or quasi-complete separation): the "
                "likelihood increases as a fixed effect goes to infinity; the estimates and SEs are not meaningful",
}

# a batch's diagnostics ("{max_iter}" is filled in)
STATUS_MESSAGES = {
    CONVERGED: "",
    MAX_ITER: "optimizer stopped after {max_iter} iterations",
    LINE_SEARCH_FAILED: "line search failed to decrease the criterion",
    NONFINITE: "criterion not finite",
    NONFINITE_STEP: "the optimizer proposed a non-finite step (learning rate or schedule); stopped at the last "
                    "finite iterate",
    CRITERION_ROSE: "the optimizer ended above its starting criterion (learning rate or schedule): not a minimum",
    NOT_IDENTIFIED: "the criterion is flat in theta at the estimate: the variance parameters are not identified "
                    "(estimates conditional on theta)",
    UNBOUNDED: "the criterion decreases without bound as theta grows (the model reproduces the data): no optimum",
    SEPARATION: "fitted probabilities 0 or 1 (complete separation): a fixed effect is unbounded",
    TOO_FEW_OBSERVATIONS: "too few observations for the fixed effects",
    ONE_LEVEL: "a grouping factor has fewer than 2 observed levels",
    LEVELS_VS_OBSERVATIONS: "number of levels of a grouping factor >= number of observations (lme4's checks)",
    X_RANK_DEFICIENT: "fixed-effects model matrix is rank deficient on this trait's rows",
    CONSTANT_RESPONSE: "the response is constant on this trait's rows: no variance to estimate",
}

# association scans (core/spectral/scan.py): per trait and marker.  The lambda statuses are tested markers (finite
# statistics) whose reported lambda ended at an end of the search range [1e-5, 1e5] -- on K scaled to a
# mean centred diagonal of 1 (association.relmat_scale), so the ends mean the same for every scale of K
MONOMORPHIC = 20
NO_GENOTYPES = 21
LAMBDA_AT_LOWER_BOUND = 22
LAMBDA_AT_UPPER_BOUND = 23
STATUS_NAMES.update({MONOMORPHIC: "monomorphic", NO_GENOTYPES: "no_genotypes",
                     LAMBDA_AT_LOWER_BOUND: "lambda_at_lower_bound", LAMBDA_AT_UPPER_BOUND: "lambda_at_upper_bound"})
STATUS_MESSAGES.update({
    MONOMORPHIC: "the marker does not vary on this trait's individuals: nothing to test",
    NO_GENOTYPES: "the marker has no genotype on this trait's individuals",
    LAMBDA_AT_LOWER_BOUND: "the reported lambda (the marker's REML variance ratio; the null model's with "
                           "mode='null') is at the lower end of the search range, 1e-5 on K scaled to mean "
                           "centred diagonal 1: the genetic variance is estimated at ~0, the boundary of the "
                           "parameter space -- the REML optimum genuinely lies there when the trait shows no "
                           "relatedness -- and beta, se and the Wald test are those at that end (ordinary least "
                           "squares to within ~1e-5)",
    LAMBDA_AT_UPPER_BOUND: "the reported lambda (the marker's REML variance ratio; the null model's with "
                           "mode='null') is at the upper end of the search range, 1e5 on K scaled to mean "
                           "centred diagonal 1: the residual variance is ~0 next to the genetic one, the optimum "
                           "may lie beyond the range, and beta, se and the Wald test are those at its end",
})
SCAN_TESTED = (CONVERGED, LAMBDA_AT_LOWER_BOUND, LAMBDA_AT_UPPER_BOUND)   # markers with statistics


class Status(enum.IntEnum):
    """A status code with its name: an ``int`` (``Status.MAX_ITER == MAX_ITER == 1``) whose ``str`` is the
    table's short name (``str(Status.MAX_ITER) == "max_iter"``).  What ``LmerResult.status`` returns."""

    CONVERGED = CONVERGED
    MAX_ITER = MAX_ITER
    LINE_SEARCH_FAILED = LINE_SEARCH_FAILED
    NONFINITE = NONFINITE
    NONFINITE_STEP = NONFINITE_STEP
    CRITERION_ROSE = CRITERION_ROSE
    NOT_IDENTIFIED = NOT_IDENTIFIED
    UNBOUNDED = UNBOUNDED
    SEPARATION = SEPARATION
    TOO_FEW_OBSERVATIONS = TOO_FEW_OBSERVATIONS
    ONE_LEVEL = ONE_LEVEL
    LEVELS_VS_OBSERVATIONS = LEVELS_VS_OBSERVATIONS
    X_RANK_DEFICIENT = X_RANK_DEFICIENT
    CONSTANT_RESPONSE = CONSTANT_RESPONSE
    MONOMORPHIC = MONOMORPHIC
    NO_GENOTYPES = NO_GENOTYPES
    LAMBDA_AT_LOWER_BOUND = LAMBDA_AT_LOWER_BOUND
    LAMBDA_AT_UPPER_BOUND = LAMBDA_AT_UPPER_BOUND

    def __str__(self) -> str:
        return STATUS_NAMES[self.value]

    def __format__(self, spec: str) -> str:     # f"{status:>12}" formats the name (an int's would give the number)
        return format(str(self), spec)


def status_name(code) -> str:
    """The table's short name of a status code (``"status 99"`` for a code outside the table)."""
    return STATUS_NAMES.get(int(code), f"status {int(code)}")


def as_status(code) -> "Status | int":
    """``code`` as a ``Status`` (an int with a name), or a plain int outside the table."""
    code = int(code)
    return Status(code) if code in STATUS_NAMES else code
