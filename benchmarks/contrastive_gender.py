"""Contrastive SPES on the embedded en->de ST model: why "der" and not "die"?

    python benchmarks/contrastive_gender.py [--utterances 36] [--masks 480] [--timing 4]

Held-out synthetic utterances (new sentences, a voice never seen in training, exact word spans from
the generator; ``spes_jax.training.data.build``) are translated by the model; where the German
output has a definite article whose gender agrees with the noun after it (der + masculine, die +
feminine, das + neuter; an adjective may come between), the article is explained against another
gender's article as foil (der -> die, die -> der, das -> der; capitalised alike). The English noun
that decides the gender is the source word of that German noun (the grammar's lexicon); its span
comes from the synthetic word timings. Measured per utterance: the share of the spectrogram map's
positive saliency mass (summed over channels) inside the noun's span vs the share its duration would
give, for the raw map and for its z-score (``single_mean_std``: the positive part is then the
above-average saliency, without the map's common offset); paired t-tests over utterances
(one-sided: more than by duration). Also timed: a contrastive
explanation vs a plain ``explain`` of the same hypothesis with the same masks (warm, median of 3).
Needs espeak-ng to synthesise the utterances.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import device_name, time_call, write_results
from scipy import stats

from spes_jax import SPESConfig, explain, explain_contrastive, load_model
from spes_jax.audio import FRAME_SHIFT_S
from spes_jax.training.data import build
from spes_jax.training.grammar import NOUNS, PEOPLE

ARTICLE_GENDER = {"der": "m", "die": "f", "das": "n"}
FOIL = {"der": "die", "die": "der", "das": "der"}
# German singular noun -> (English noun, gender)
LEXICON = {**{de: (en, g) for en, _, de, _, g in NOUNS},
           **{de.split()[-1]: (en.split()[-1], g) for en, de, _, g in PEOPLE if de.split()[0] in ARTICLE_GENDER}}


def article_case(pieces: list[str], words_en: list[str]):
    """The first gender-agreeing article of a hypothesis: (piece index, foil piece, English noun), or None."""
    for i, piece in enumerate(pieces[:-2]):
        art = piece.lstrip("\u2581")
        if not piece.startswith("\u2581") or art.lower() not in ARTICLE_GENDER:
            continue
        # the noun: the next whole word (pieces up to the next word start), or the one after an adjective
        words, cur = [], ""
        for p in pieces[i + 1:]:
            if p.startswith("\u2581") and cur:
                words.append(cur)
                cur = ""
            cur += p.lstrip("\u2581")
            if len(words) == 2:
                break
        words.append(cur)
        noun = next((w for w in words[:2] if w in LEXICON), None)
        if noun is None or LEXICON[noun][1] != ARTICLE_GENDER[art.lower()]:
            continue
        foil = FOIL[art.lower()]
        foil = "\u2581" + (foil.capitalize() if art[0].isupper() else foil)
        english = LEXICON[noun][0]
        if words_en.count(english) != 1:  # the noun must be unambiguous in the source
            return None
        return i, foil, english
    return None


def mass_share(spec: np.ndarray, start_s: float, end_s: float) -> tuple[float, float]:
    """(T, C) map -> share of its positive mass in frames [start, end) and the share by duration."""
    per_frame = np.clip(spec, 0, None).sum(axis=1)
    T = len(per_frame)
    a, b = round(start_s / FRAME_SHIFT_S), min(T, round(end_s / FRAME_SHIFT_S))
    total = per_frame.sum()
    return (float(per_frame[a:b].sum() / total) if total > 0 else 0.0), (b - a) / T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=36, help="explained utterances (at least 30 for the test)")
    ap.add_argument("--pool", type=int, default=60, help="held-out utterances generated to find them")
    ap.add_argument("--masks", type=int, default=480)
    ap.add_argument("--timing", type=int, default=4, help="utterances timed against a plain explain")
    args = ap.parse_args()
    model = load_model("st")
    test = build(0, args.pool)[1]
    cfg = SPESConfig.st(n_masks=args.masks, n_token_masks=0, batch_size=32)
    feats = [u.features.astype(np.float32) for u in test]
    hyps = [h[0] for h in model.decode(feats)]
    rows, inputs, skipped, start = [], [], 0, time.perf_counter()
    for u, f, h in zip(test, feats, hyps):
        if len(rows) == args.utterances:
            break
        words_en = [w for w, _, _ in u.words]
        case = article_case(list(h.pieces), words_en)
        if case is None:
            skipped += 1
            continue
        i, foil_piece, english = case
        foil = list(h.tokens)
        foil[i] = model.dictionary.index(foil_piece)
        t0 = time.perf_counter()
        exp = explain_contrastive(model, f, list(h.tokens), foil, cfg, start=i, end=i, utt_id=u.id,
                                  normalizer="single_mean_std")
        seconds = time.perf_counter() - t0
        _, a, b = u.words[words_en.index(english)]
        share, expected = mass_share(exp.spectrogram_saliency[0], a, b)
        share_z, _ = mass_share(exp.normalized().spectrogram_saliency[0], a, b)
        c = exp.contrastive
        inputs.append((f, list(h.tokens), foil, i))
        rows.append({"id": u.id, "en": u.en, "hyp": h.text, "article": c["word"], "foil": c["foil_word"],
                     "noun": english, "noun_start_s": a, "noun_end_s": b, "frames": f.shape[0], "share_raw": share,
                     "share_z": share_z, "expected": expected, "p_orig": c["p_orig"], "q_orig": c["q_orig"],
                     "seconds": seconds})
        print(f"{u.id}  {c['word']:>4} vs {c['foil_word']:<4} noun {english:<8} share raw {share:.3f} z {share_z:.3f} "
              f"(duration {expected:.3f})  P_o {c['p_orig']:.3f} Q_o {c['q_orig']:.2e}  {seconds:.1f} s", flush=True)
    sweep_s = time.perf_counter() - start
    expected = np.array([r["expected"] for r in rows])
    tests = {}
    for kind in ("raw", "z"):
        share = np.array([r[f"share_{kind}"] for r in rows])
        t = stats.ttest_rel(share, expected, alternative="greater")
        tests[kind] = {"share_mean": float(share.mean()), "ratio_mean": float(np.mean(share / expected)),
                       "above": int(np.sum(share > expected)), "t": float(t.statistic), "p": float(t.pvalue)}
        print(f"{kind} map: share in the noun's span {share.mean():.3f} vs {expected.mean():.3f} by duration "
              f"(ratio {np.mean(share / expected):.2f}, {np.sum(share > expected)}/{len(rows)} above); "
              f"paired t = {t.statistic:.2f}, one-sided p = {t.pvalue:.2e}")
    print(f"{len(rows)} utterances ({skipped} skipped: no gender-agreeing article or an ambiguous noun)")

    # warm timing (median of 3 after a warm-up call, so no compilation): the machine is shared and noisy
    timing = []
    for r, (f, target, foil, i) in zip(rows[:args.timing], inputs):
        runs = {"contrastive": lambda f=f, t=target, q=foil, i=i: explain_contrastive(model, f, t, q, cfg, start=i, end=i),
                "plain": lambda f=f, t=target: explain(model, f, cfg, targets=[t])}
        row = {"id": r["id"]}
        for name, fn in runs.items():
            row[name] = time_call(fn, min_time=0.0, min_reps=3)
        timing.append(row)
        print(f"{r['id']}: contrastive {row['contrastive']:.2f} s, plain {row['plain']:.2f} s, "
              f"ratio {row['contrastive'] / row['plain']:.2f}", flush=True)
    ratio = float(np.mean([x["contrastive"] / x["plain"] for x in timing])) if timing else None
    summary = {"utterances": len(rows), "skipped": skipped, "expected_mean": float(expected.mean()), **{
               f"{kind}_{k}": v for kind, d in tests.items() for k, v in d.items()},
               "sweep_seconds_total": sweep_s, "time_ratio_contrastive_vs_plain": ratio}
    print(summary)
    path = write_results("contrastive_gender", rows, {"device": device_name(), "model": "st", "n_masks": args.masks,
                                                      "summary": summary, "timing": timing})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
