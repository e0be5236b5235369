"""Importing and using jaxlmm changes nothing global in the caller's JAX program (issue N)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os
import jax, jax.numpy as jnp

def state():
    return {"x64": bool(jax.config.jax_enable_x64),
            "cache_dir": jax.config.jax_compilation_cache_dir,
            "cache_min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "ones": str(jnp.ones(2).dtype)}

out = {"before": state()}
import jaxlmm
out["import"] = state()
data = jaxlmm.load_dataset("sleepstudy")
fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data)
out["lmer"] = state()
out["theta"] = fit.theta.tolist()
out["criterion"] = fit.criterion
out["fixef_dtype"] = str(fit.fixef.to_numpy().dtype)
batch = jaxlmm.lmer("~ Days + (1 | Subject)", data, responses=data[["Reaction"]].assign(R2=data["Reaction"] * 2))
out["batch"] = state()
out["batch_theta"] = batch.theta.to_numpy()[:, 0].tolist()
jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data).confint(method="profile")
out["profile"] = state()
jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data).bootstrap(nsim=20, seed=1)
out["bootstrap"] = state()
f = jaxlmm.deviance_function("Reaction ~ Days + (Days | Subject)", data)
out["direct_call"] = float(f([0.9667, 0.0152, 0.2309]))
try:
    jax.grad(f)(jnp.asarray([0.9667, 0.0152, 0.2309]))
    out["grad_without_x64"] = "no error"
except jaxlmm.JaxlmmError as exc:
    out["grad_without_x64"] = str(exc)
out["after"] = state()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64", "JAXLMM_TEST_X64")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_calls_change_no_global_state(report):
    before = report["before"]
    assert before["x64"] is False and before["ones"] == "float32"
    for stage in ("import", "lmer", "batch", "profile", "bootstrap", "after"):
        assert report[stage] == before, stage


def test_results_are_float64_parity(report):
    assert report["fixef_dtype"] == "float64"
    assert report["criterion"] == pytest.approx(1743.6282719599, rel=1e-10)
    assert report["theta"] == pytest.approx([0.96673295, 0.01516905, 0.23090959], rel=1e-6)
    assert report["batch_theta"][0] == pytest.approx(1.1978815, rel=1e-6)
    assert report["batch_theta"][1] == pytest.approx(1.1978815, rel=1e-6)


def test_research_entry_point_explains_x64(report):
    assert report["direct_call"] == pytest.approx(1743.6283, rel=1e-6)
    assert "jax.config.update('jax_enable_x64', True)" in report["grad_without_x64"]
