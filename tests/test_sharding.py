"""Traits sharded over several (forced host) devices give the unsharded results; a two-process
``jax.distributed`` run on loopback gives the one-process results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

SHARDED = r"""
import json, sys
import numpy as np, pandas as pd, jax, jaxlmm
assert len(jax.devices()) == 4, jax.devices()
data = jaxlmm.load_dataset("sleepstudy")
rng = np.random.default_rng(0)
Y = pd.DataFrame({f"t{i}": data["Reaction"] + rng.normal(0, 10 * (i + 1), len(data)) for i in range(10)})
Y.iloc[rng.integers(0, len(data), 30), 3] = np.nan
out = {}
for name, devices in [("sharded", None), ("single", jax.devices()[:1])]:
    b = jaxlmm.lmer("~ Days + (Days | Subject)", data, responses=Y, devices=devices, progress=False)
    out[name] = {"criterion": b.criterion.tolist(), "theta": b.theta.to_numpy().tolist(),
                 "fixef": b.fixef.to_numpy().tolist(), "se": b.se.to_numpy().tolist(), "chunk": b.chunk_size}
# the spectral path (a relationship matrix, one record per individual): per-device programs too
ids = [f"i{i}" for i in range(60)]
G = rng.normal(size=(60, 200))
K = pd.DataFrame(G @ G.T / 200 + 0.05 * np.eye(60), index=ids, columns=ids)
ind = pd.DataFrame({"id": ids, "x": rng.normal(size=60)})
Yk = pd.DataFrame({f"t{i}": ind["x"] + rng.multivariate_normal(np.zeros(60), K.to_numpy()) + rng.normal(size=60)
                   for i in range(10)})
Yk.iloc[rng.integers(0, 60, 6), 2] = np.nan
for name, devices in [("spectral_sharded", None), ("spectral_single", jax.devices()[:1])]:
    b = jaxlmm.lmer("~ x + (1 | id)", ind, responses=Yk, relmat={"id": K}, devices=devices, progress=False,
                    spectral=True)
    out[name] = {"criterion": b.criterion.tolist(), "theta": b.theta.to_numpy().tolist(),
                 "fixef": b.fixef.to_numpy().tolist(), "se": b.se.to_numpy().tolist(), "chunk": b.chunk_size}
print(json.dumps(out))
"""


def _env(**extra):
    env = dict(os.environ)
    env.update(extra)
    return env


def test_sharded_batch_equals_unsharded():
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    run = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["sharded"]["chunk"] % 4 == 0
    for key in ["criterion", "theta", "fixef", "se"]:
        np.testing.assert_allclose(out["sharded"][key], out["single"][key], rtol=1e-10, atol=1e-12)
        # the spectral chunks group traits differently on 4 devices: a flat likelihood's theta moves ~1e-9
        np.testing.assert_allclose(out["spectral_sharded"][key], out["spectral_single"][key],
                                   rtol=1e-10 if key == "criterion" else 1e-6, atol=1e-10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_distributed_equals_one_process(tmp_path):
    import jaxlmm

    data = jaxlmm.load_dataset("sleepstudy")
    rng = np.random.default_rng(1)
    for i in range(7):
        data[f"trait{i}"] = data["Reaction"] + rng.normal(0, 15, len(data))
    data.loc[rng.integers(0, len(data), 20), "trait2"] = np.nan
    src = tmp_path / "traits.csv"
    data.to_csv(src, index=False)
    port = _free_port()
    procs = []
    for pid in range(2):
        cmd = [sys.executable, "-m", "jaxlmm.cli.main", "fit", str(src), "~ Days + (1 | Subject)", "--responses",
               "trait*", "--out", str(tmp_path / "dist"), "--no-cache", "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", str(pid)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=_env(JAX_PLATFORMS="cpu")))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    merged = pd.read_csv(tmp_path / "dist" / "results.csv", index_col=0)
    parts = sorted(p.name for p in (tmp_path / "dist").glob("results.part*.csv"))
    assert parts == ["results.part0.csv", "results.part1.csv"]
    one = jaxlmm.lmer("~ Days + (1 | Subject)", data, responses=[f"trait{i}" for i in range(7)], progress=False)
    assert list(merged.index) == [f"trait{i}" for i in range(7)]
    np.testing.assert_allclose(merged["criterion"], one.criterion, rtol=1e-10)
    np.testing.assert_allclose(merged["fixef_Days"], one.fixef["Days"], rtol=1e-10)
