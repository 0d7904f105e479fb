"""Corpus-run throughput and memory.

    python benchmarks/corpus.py throughput CORPUS.tsv [--utterances 100] [--masks 300 --token-masks 100]
    python benchmarks/corpus.py memory --utterances 100      # peak RSS; run again with 400

throughput: one ``explain_corpus`` run over the manifest with the embedded model (a first run in the
same process compiles every bucket; the measured second run compiles nothing), reporting
utterances/hour, masks/s, the wall-time split (decode, SLIC, sweep, write) and the fraction of the
single-utterance sweep rate (warm ``core.run`` on each utterance alone, same masks) that the corpus
run reaches: (masks / corpus wall time after decoding) / (masks / summed single-utterance sweep time).
memory: peak RSS of a run over N short synthetic utterances of one bucket (fbank arrays in a fairseq
zip, reference targets) in a fresh process.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
import zipfile

import jax
import numpy as np
from common import device_name

from spes_jax import SPESConfig, load_model
from spes_jax.core import segment, sweep
from spes_jax.corpus import explain_corpus, read_corpus
from spes_jax.corpus.rundir import stored_targets
from spes_jax.corpus.sources import load_source
from spes_jax.driver import params_on_devices


def throughput(args) -> None:
    model = load_model(args.task)
    cfg = model.sweep_config(SPESConfig.asr(n_masks=args.masks, n_token_masks=args.token_masks,
                                           batch_size=args.batch_size))
    with tempfile.TemporaryDirectory() as d:
        explain_corpus(model, args.manifest, os.path.join(d, "warm"), cfg, limit=args.utterances)
        traces = dict(sweep.trace_counts())
        s = explain_corpus(model, args.manifest, os.path.join(d, "run"), cfg, limit=args.utterances)
        assert sweep.trace_counts() == traces, "the measured run recompiled"
        targets = stored_targets(os.path.join(d, "run"))
    plan = sweep.make_plan(model.module, cfg, jax.local_devices())
    params = params_on_devices(model, plan)
    single = 0.0
    for u in read_corpus(args.manifest)[: args.utterances]:
        if u.id not in targets:
            continue
        feats = load_source(model, u.source)
        inputs = sweep.prepare(feats, targets[u.id], segment(feats, cfg), u.id, cfg, plan)
        t = time.perf_counter()
        jax.block_until_ready(sweep.run(sweep.init(params, inputs, plan=plan), plan, cfg))
        single += time.perf_counter() - t
    after_decode = s.wall - s.seconds["decode"]
    print(f"device: {device_name()}; {s.utterances} utterances, {s.audio_seconds:.0f} s of audio, "
          f"N_X {cfg.n_masks}, N_Y {cfg.n_token_masks}")
    print(f"utterances/hour {s.utterances / s.wall * 3600:.0f} (after decoding: "
          f"{s.utterances / after_decode * 3600:.0f}); masks/s {s.masks / after_decode:.0f} (sweep alone "
          f"{s.masks_per_second:.0f}); single-utterance sweep {s.masks / single:.0f} masks/s; "
          f"fraction {single / after_decode:.2f}")
    print("wall split: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.seconds.items()) + f"; wall {s.wall:.1f} s")


def memory(args) -> None:
    model = load_model("asr")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        rows = ["id\taudio\tn_frames\ttgt_text\tspeaker"]
        with zipfile.ZipFile(os.path.join(d, "f.zip"), "w", zipfile.ZIP_STORED) as z:
            for i in range(args.utterances):
                buf = io.BytesIO()
                np.save(buf, rng.standard_normal((40 + i % 20, 80)).astype(np.float32))
                z.writestr(f"u{i}.npy", buf.getvalue())
        with zipfile.ZipFile(os.path.join(d, "f.zip")) as z, open(os.path.join(d, "f.zip"), "rb") as f:
            for info in z.infolist():
                f.seek(info.header_offset + 26)
                n = int.from_bytes(f.read(2), "little") + int.from_bytes(f.read(2), "little")
                rows.append(f"{info.filename[:-4]}\tf.zip:{info.header_offset + 30 + n}:{info.file_size}\t0\t"
                            f"the chair is behind the flower.\ts")
        with open(os.path.join(d, "m.tsv"), "w") as f:
            f.write("\n".join(rows) + "\n")
        cfg = SPESConfig.asr(n_masks=12, n_token_masks=8, batch_size=12, token_batch_size=8)
        s = explain_corpus(model, os.path.join(d, "m.tsv"), os.path.join(d, "run"), cfg, targets="reference")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{s.utterances} utterances: peak RSS {peak:.0f} MiB, wall {s.wall:.0f} s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("manifest")
    t.add_argument("--task", default="asr")
    t.add_argument("--utterances", type=int, default=100)
    t.add_argument("--masks", type=int, default=300)
    t.add_argument("--token-masks", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=64)
    t.set_defaults(func=throughput)
    m = sub.add_parser("memory")
    m.add_argument("--utterances", type=int, default=100)
    m.set_defaults(func=memory)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
