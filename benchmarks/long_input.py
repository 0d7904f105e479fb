"""How long an input the embedded ASR model transcribes without dropping speech.

    python benchmarks/long_input.py [--model asr] [--sentences 1 2 3 4 6 8 10] [--per 6]

For each number of sentences k, ``--per`` inputs of k held-out sentences (continuous speech in the
held-out voice, 0.3-1 s pauses; sentences not used by sets (b), (c) or the long set) are transcribed
with the model's own search; WER, share of reference words the hypothesis is short of, and input
durations per k. The longest k whose WER stays within the issue's 10 % gives the ``max_seconds`` a
model directory states. Needs espeak-ng.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import device_name, print_table, write_results
from spes_jax import load_model
from spes_jax.training.data import wer
from spes_jax.training.robust import HELD_OUT_POOL, concatenated, held_out_sentences, held_out_voices

FIRST_UNUSED = 300  # sets (b)/(c) use the pool's first 200 sentences, the long set the next <= 100


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="asr")
    ap.add_argument("--sentences", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 10])
    ap.add_argument("--per", type=int, default=6, help="inputs per number of sentences")
    args = ap.parse_args()
    pool = held_out_sentences(HELD_OUT_POOL)[FIRST_UNUSED:]
    if sum(args.sentences) * args.per > len(pool):
        raise SystemExit(f"error: needs {sum(args.sentences) * args.per} sentences, the held-out pool has {len(pool)}")
    model = load_model(args.model)
    voices, rng, rows = held_out_voices(), np.random.default_rng(5), []
    for k in args.sentences:
        utts = []
        for j in range(args.per):
            group, pool = pool[:k], pool[k:]
            utts.append(concatenated(f"k{k}_{j}", group, voices[j % len(voices)], rng))
        hyps = [h[0].text if h else "" for h in model.decode([u.features.astype(np.float32) for u in utts],
                                                               batch_size=2)]
        seconds = [len(u.features) / 100 for u in utts]
        ref_words = sum(len(u.en.split()) for u in utts)
        rows.append({"sentences": k, "inputs": len(utts), "mean_s": round(float(np.mean(seconds)), 1),
                     "max_s": round(float(np.max(seconds)), 1), "wer": round(wer([u.en for u in utts], hyps), 2),
                     "missing_words_pct": round(100 * max(ref_words - sum(len(h.split()) for h in hyps), 0)
                                                / ref_words, 1),
                     "example": {"ref": utts[0].en, "hyp": hyps[0]}})
        print_table(rows[-1:], ["sentences", "inputs", "mean_s", "max_s", "wer", "missing_words_pct"])
    path = write_results("long_input", rows, {"device": device_name(), "model": args.model, "per": args.per})
    print_table(rows, ["sentences", "inputs", "mean_s", "max_s", "wer", "missing_words_pct"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
