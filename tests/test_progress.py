"""Progress counts masks the device has finished; Ctrl-C ends a command at once and writes nothing."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from spes_jax import SPESConfig, explain
from spes_jax.core.pacing import DEPTH, StepQueue
from support import save_tiny_model, synthetic_features


def test_step_queue_reports_finished_steps_and_keeps_few_in_flight():
    step = jax.jit(lambda x, i: jnp.tanh(x @ x) + i)
    x = jnp.ones((512, 512), jnp.float32) / 512
    outputs, reported = [], []

    def progress(n):
        assert outputs[len(reported)].is_ready()  # the step is finished when it is counted
        reported.append(n)

    queue = StepQueue(progress)
    for i in range(8):
        x = step(x, i)
        outputs.append(x)
        queue.push(x, i + 1)
        # every step but the last DEPTH has finished (and been counted) before the next is dispatched
        assert all(o.is_ready() for o in outputs[:-DEPTH]) and len(reported) == max(0, len(outputs) - DEPTH)
    queue.drain()
    assert reported == list(range(1, 9))


def test_explain_progress_closes_at_the_masks_it_ran(tiny_model, capsys):
    """With until_r the sweeps stop early: the bar's total drops to the masks run, so it ends full."""
    cfg = SPESConfig.asr(n_segments=(40, 60), n_masks=1024, n_token_masks=256, batch_size=32, token_batch_size=64,
                         until_r=0.3)
    exps = explain(tiny_model, [synthetic_features(0.6, seed=3), synthetic_features(0.62, seed=4)], cfg,
                   ids=["a", "b"], targets=[[5, 6, 7, 2]] * 2, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("SPES: 2 utterances, 1024 spectrogram and 256 prefix masks each, on cpu\n")
    ran = sum(e.n_masks + e.n_token_masks for e in exps)
    assert ran < 2 * (1024 + 256)
    assert re.findall(r"(\d+)/(\d+) \[", err)[-1] == (str(ran), str(ran))
    # A named bar (compare names each method's): announced and shown under that name.
    explain(tiny_model, synthetic_features(0.6, seed=3), cfg.replace(until_r=None, n_masks=32, n_token_masks=8),
            targets=[5, 6, 7, 2], progress="- KL")  # a single input's target: its ids
    err = capsys.readouterr().err
    assert err.startswith("- KL: 1 utterance, 32 spectrogram and 8 prefix masks each") and "SPES" not in err


@pytest.fixture(scope="module")
def explain_command(tiny_model, tmp_path_factory):
    """``spes-jax explain`` of 1 s of noise with the tiny model and far more masks than a test can wait for."""
    d = tmp_path_factory.mktemp("interrupt")
    sf.write(d / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(16000), 16000, subtype="PCM_16")
    model = save_tiny_model(tiny_model, str(d))
    return d, [sys.executable, "-m", "spes_jax.cli", "--no-compile-cache", "explain", str(d / "a.wav"), "--model",
               model, "--masks", "300000", "--token-masks", "10", "--batch-size", "16", "--out", str(d / "x.h5")]


def _interrupt_when(cmd: list[str], ready, wait: float = 30) -> tuple[int, str, float]:
    """Runs ``cmd``, sends it SIGINT once ``ready(stderr so far)``; returns its exit code, whole stderr
    and the seconds from the signal to its exit."""
    # As from a terminal: a shell without job control starts background jobs with SIGINT ignored, and a
    # process that inherits that never sees Ctrl-C (Python then installs no KeyboardInterrupt handler).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: os.read(proc.stderr.fileno(), 4096), b"")))
    reader.start()
    deadline = time.monotonic() + 300
    while not ready(b"".join(err).decode()):
        assert proc.poll() is None and time.monotonic() < deadline, b"".join(err).decode()
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=wait)
    latency = time.monotonic() - sent
    reader.join()
    return proc.returncode, b"".join(err).decode(), latency


@pytest.mark.parametrize("moment, ready", [
    ("compiling the sweep", lambda err: " masks each, on " in err),
    ("sweeping", lambda err: re.search(r"\| *[1-9]\d*/\d+ \[", err) is not None),
])
def test_ctrl_c_ends_explain_within_2_s_and_writes_nothing(explain_command, moment, ready):
    d, cmd = explain_command
    code, err, latency = _interrupt_when(cmd, ready)
    assert code == 130 and err.endswith("spes-jax: interrupted\n")
    assert latency < 2.0, (moment, latency)
    assert sorted(os.listdir(d)) == ["a.wav", "dict.txt", "model"]  # no output, no temporary file


@pytest.mark.slow  # ~30-50 s: two sweeps and their compilations in a subprocess
def test_ctrl_c_in_a_corpus_run_commits_the_finished_utterances(tiny_model, tmp_path):
    """Ctrl-C while the second utterance is swept: the first, explained but not yet due for a commit,
    is committed before the process ends, and the message says how to go on."""
    from spes_jax.corpus import load_run

    corpus = tmp_path / "audio"
    corpus.mkdir()
    for name, seconds in (("long", 1.3), ("short", 0.7)):  # swept longest first
        sf.write(corpus / f"{name}.wav", 0.1 * np.random.default_rng(1).standard_normal(int(16000 * seconds)), 16000,
                 subtype="PCM_16")
    model = save_tiny_model(tiny_model, str(tmp_path))
    cmd = [sys.executable, "-m", "spes_jax.cli", "--no-compile-cache", "explain-corpus", str(corpus), "--model", model,
           "--masks", "2000", "--token-masks", "10", "--batch-size", "64", "--shard-size", "100",
           "--commit-every", "3600", "--out", str(tmp_path / "run")]
    code, out, _ = _interrupt_when(cmd, lambda err: re.search(r" 1/2 \[", err) is not None, wait=60)
    assert code == 130 and "spes-jax: interrupted\n" in out, out
    assert out.endswith(f"spes-jax: 1 utterance of the run committed in {tmp_path / 'run'}; the same command with "
                        "--resume explains the rest\n"), out
    assert list(load_run(tmp_path / "run")) == ["long"]
