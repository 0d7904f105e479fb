"""Time plausibility (paper, section 8.1) of SPES maps of the embedded ASR model.

    python benchmarks/time_plausibility.py [--utterances 50] [--masks 2000] [--set a|b]

Explains held-out synthetic utterances (new sentences, a voice never seen in training; exact word
spans from the generator; ``--set b``: continuous speech with espeak-ng's own word timings, see
``spes_jax/training/robust.py``) and tests whether word-level saliency is higher inside the word's span than
outside (paired Student's t-test over words). Hypothesis words are paired with timed words by content;
utterances where fewer than half of them are recognised are left out and counted. Needs espeak-ng
to synthesise the utterances.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import device_name, write_results
from spes_jax import SPESConfig, explain, load_model
from spes_jax.analysis.plausibility import align_words, hypothesis_words, time_alignment
from spes_jax.training.data import build
from spes_jax.training.robust import eval_sets


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="asr")
    ap.add_argument("--utterances", type=int, default=50)
    ap.add_argument("--masks", type=int, default=2000)
    ap.add_argument("--token-masks", type=int, default=0)
    ap.add_argument("--set", choices=["a", "b"], default="a", help="a: spliced (default), b: continuous speech")
    args = ap.parse_args()
    model = load_model(args.model)
    test = build(0, args.utterances)[1] if args.set == "a" else eval_sets(args.utterances, 0, which="b")["b"]
    cfg = SPESConfig.asr(n_masks=args.masks, n_token_masks=args.token_masks)
    pairs, skipped = [], 0
    for u in test:
        feats = u.features.astype(np.float32)
        hyp = model.decode([feats])[0][0]
        words = hypothesis_words(list(hyp.pieces))
        spans = align_words(words, u.words)  # by content: a misrecognised word gets no span
        if sum(s is not None for s in spans) < len(words) / 2:
            skipped += 1
            continue
        exp = explain(model, feats, cfg, ids=[u.id], targets=[list(hyp.tokens)])
        pairs.append((exp, spans))
    res = time_alignment(pairs)
    print(f"{res.n_utterances} utterances ({skipped} skipped: fewer than half the words recognised), {res.n_words} words; "
          f"inside {res.inside.mean():.3f} vs outside {res.outside.mean():.3f}; "
          f"paired t = {res.t:.2f}, one-sided p = {res.p:.2e}")
    name = "time_plausibility" + ("" if args.set == "a" else "_b")
    write_results(name, [{"utterances": res.n_utterances, "skipped": skipped, "words": res.n_words,
                          "inside_mean": float(res.inside.mean()),
                          "outside_mean": float(res.outside.mean()), "t": res.t, "p": res.p}],
                  {"device": device_name(), "model": args.model, "n_masks": args.masks, "set": args.set})


if __name__ == "__main__":
    main()
