"""mixedlm 1.3.0 (lme4 ported to Python on a Rust core) timed on benchmarks/glmm.py's workloads.

Run in its own environment (never a jaxlmm dependency): ~/.peervenv/bin/python glmm_mixedlm.py REF TRAITS NTRAITS
prints JSON: per workload the best of three warm fits, the first call (import + fit) and the log-likelihood.
"""
import json
import sys
import time

t_import = time.perf_counter()
import mixedlm  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

t_import = time.perf_counter() - t_import
ref, traits_path, ntraits = sys.argv[1], sys.argv[2], int(sys.argv[3])


def contraception():
    d = pd.read_csv(f"{ref}/shared/contraception.csv", dtype={"district": str, "urban_district": str})
    d["livch"] = pd.Categorical(d["livch"].astype(str), categories=["0", "1", "2", "3+"])
    d["age2"] = d["age"] ** 2
    return d


def verbagg():
    d = pd.read_csv(f"{ref}/project/verbagg.csv", dtype={"id": str, "item": str})
    d["btype"] = pd.Categorical(d["btype"], categories=["curse", "scold", "shout"])
    return d


binomial = mixedlm.families.Binomial() if hasattr(mixedlm, "families") else None
out = {"import": t_import}
for name, formula, frame in [("contraception", "use01 ~ age + age2 + urban + livch + (1 | urban_district)",
                              contraception()),
                             ("verbagg", "r2_01 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", verbagg())]:
    t0 = time.perf_counter()
    fit = mixedlm.glmer(formula, frame, family=binomial)
    first = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fit = mixedlm.glmer(formula, frame, family=binomial)
        times.append(time.perf_counter() - t0)
    out[name] = {"first": first, "warm_best": min(times), "loglik": float(fit.logLik().value if hasattr(fit.logLik(), "value") else fit.logLik())}
tr = pd.read_csv(traits_path)
tr["g"] = tr["g"].astype(str)
names = [c for c in tr.columns if c not in ("g", "x")][:ntraits]
t0 = time.perf_counter()
ll = []
for c in names:
    d = tr[["g", "x"]].assign(y=tr[c]).dropna()
    ll.append(float(mixedlm.glmer("y ~ x + (1 | g)", d, family=binomial).logLik().value))
out["traits"] = {"seconds_per_trait": (time.perf_counter() - t0) / len(names), "ntraits": len(names), "loglik": ll}
print(json.dumps(out))
