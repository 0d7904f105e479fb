"""Corpus runs as real processes: SIGKILL at random moments then --resume, and 2 processes on
127.0.0.1 through jax.distributed, each compared with one uninterrupted single-process run."""

import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from support import fairseq_zip_manifest, save_tiny_model, synthetic_features

from spes_jax import load_explanations
from spes_jax.corpus import load_run, merge

pytestmark = pytest.mark.slow

ARGS = ["--masks", "6", "--token-masks", "4", "--batch-size", "4", "--seed", "3", "--targets", "reference",
        "--shard-size", "1", "--quiet"]
# Runs the command line; with SPES_TEST_DIE_IN_SHARD=n the n-th shard write is cut by SIGKILL after its
# third dataset (the temporary file beside the shards holds part of a shard when the process dies).
DRIVER = """
import os, signal, sys
import h5py
from spes_jax.corpus import rundir
n = int(os.environ.get("SPES_TEST_DIE_IN_SHARD", "0"))
if n:
    real_save, real_create, calls, written = rundir.save_explanations, h5py.Group.create_dataset, [], []
    def create(self, *a, **k):
        out = real_create(self, *a, **k)
        written.append(1)
        if len(calls) == n and len(written) == 3:
            self.file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    def save(path, exps, *args):
        calls.append(path)
        written.clear()
        real_save(path, exps, *args)
    h5py.Group.create_dataset, rundir.save_explanations = create, save
from spes_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("procs")
    lengths = [0.5, 0.52, 0.54, 0.56, 0.58, 0.6]  # one bucket: one compilation, reused from the cache
    arrays = {f"u{i}": synthetic_features(s, seed=20 + i) * 3 + 5 for i, s in enumerate(lengths)}
    manifest = fairseq_zip_manifest(str(d), arrays, {k: "w3 w5 w7 w9" for k in arrays})
    # 2 host devices in every run: the masks' partial sums are then reduced in the same order in the
    # 1-process reference, the killed runs and each of the 2 processes (other device counts agree to
    # float32 rounding of that sum, ~1e-5 relative, not to 1e-6)
    env = {**os.environ, "SPES_JAX_CACHE_DIR": str(d / "xla"), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    model = save_tiny_model(tiny_model, str(d))
    reference = d / "reference"
    _cli(env, manifest, reference, model).check_returncode()
    return d, manifest, model, env, load_run(reference)


def _cli(env, manifest, out, model, *extra, wait=True, die_in_shard=0):
    cmd = [sys.executable, "-c", DRIVER, "explain-corpus", str(manifest), "--out", str(out), "--model", model,
           *ARGS, *extra]
    env = {**env, "SPES_TEST_DIE_IN_SHARD": str(die_in_shard)}
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for uid, exp in want.items():
        np.testing.assert_allclose(got[uid].spectrogram_saliency, exp.spectrogram_saliency, atol=1e-6)
        np.testing.assert_allclose(got[uid].prefix_saliency, exp.prefix_saliency, atol=1e-6)
        assert got[uid].tokens == exp.tokens


def _kill_when(proc, ready, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``ready()`` holds; False if it finished first."""
    while not ready():
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(setup):
    d, manifest, model, env, want = setup
    run = d / "killed"
    index = run / "proc-00000" / "index.json"
    rng = random.Random(int(time.time()))
    # 1: a random moment of start-up, decoding or the first sweep
    p = _cli(env, manifest, run, model, wait=False)
    _kill_when(p, lambda: True, rng.uniform(0.5, 6.0))
    # 2: during a shard write (the second shard of this attempt dies halfway through its file)
    r = _cli(env, manifest, run, model, "--resume", die_in_shard=2)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert any(n.startswith(".spes-jax-") for n in os.listdir(run / "proc-00000"))  # the cut shard
    # 3: a random moment after a shard was committed
    p = _cli(env, manifest, run, model, "--resume", wait=False)
    committed_before = len(load_run(run))
    _kill_when(p, lambda: index.exists() and len(load_run(run)) > committed_before, rng.uniform(0, 0.5))
    r = _cli(env, manifest, run, model, "--resume")
    assert r.returncode == 0, r.stderr
    got = load_run(run)
    _same(got, want)
    merge(run, d / "killed.h5")
    _same(load_explanations(d / "killed.h5"), want)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(setup):
    d, manifest, model, env, want = setup
    run = d / "two"
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [_cli(env, manifest, run, model, "--coordinator", coordinator, "--num-processes", "2",
                  "--process-id", str(i), wait=False) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    shards = {sub: os.listdir(run / sub) for sub in ("proc-00000", "proc-00001")}
    assert all(any(n.startswith("shard-") for n in names) for names in shards.values())
    merge(run, d / "two.h5")
    _same(load_explanations(d / "two.h5"), want)
