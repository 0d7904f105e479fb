"""Whisper: what an occluded log-mel cell becomes, decided by deletion AUC on real speech.

    python benchmarks/whisper_occlusion.py [--masks 60] [--clips A.wav ...] [--maps DIR] [--out results.json]

Every clip is explained once per occlusion value ("floor", "zero", "mean") with the same seed, hence the
same SLIC segments and the same masks: only what the occluded cells become differs. The hypothesis
explained is Whisper's own beam-5 output, decoded once. Each set of explanations (and a random ranking
of the cells, the control) is then scored by deletion curves under each ``--deletions`` value: a row
of the table compares rankings under one deletion, and a map's margin over the random ranking of its
row says how much it knows beyond how destructive that deletion is. Deletion AUC is over the fraction
deleted (0..1 x WER, higher = more faithful); size AUC over the thresholds (lower = more compact).
Before that, the outputs on the sweep's first ``--masked`` masked inputs show how destructive a single
SPES mask (half of the segments occluded) is with each value.

References: the deletion curve measures how far the output moves from what the model says on the
undeleted input, so each clip's reference is that output (with the curves' own greedy search, so
p = 0 scores 0), and both sides are compared word by word after NFKC case-folding with only letters
and digits kept (``plausibility.normalize_word``): Whisper writes case, punctuation and digits ("10"
for "ten"), which would otherwise count as errors before anything is deleted. The WER of the explained
output against the human transcripts is reported beside.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import time

import jax.numpy as jnp
import numpy as np

from common import device_name
from spes_jax import SPESConfig, explain, load_model
from spes_jax.analysis.metrics import auc, corpus_score, perturbation_curve, size_curve
from spes_jax.analysis.plausibility import normalize_word
from spes_jax.core import segment, sweep
from spes_jax._compile_cache import enable as enable_compile_cache
from spes_jax.explanation import Explanation, load_explanations, save_explanations
from spes_jax.whisper.model import OCCLUSIONS

FIXTURES = os.environ.get("SPES_WHISPER_FIXTURES", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                 "fixtures", "whisper"))


def normalized(text: str) -> str:
    return " ".join(w for w in map(normalize_word, text.split()) if w)


def wer_curve(curve, references: dict[str, str]) -> np.ndarray:
    """(P,) corpus WER (``wer_max``) of a curve's hypotheses against ``references``, both normalised."""
    ids = list(curve.hypotheses)
    return np.array([corpus_score("wer_max", [normalized(references[i]) for i in ids],
                                  [normalized(curve.hypotheses[i][p]) for i in ids])
                     for p in range(len(curve.percentages))])


def random_ranking(exp: Explanation, seed: int) -> Explanation:
    """The control: ``exp`` with uniformly random spectrogram maps and no prefix saliency."""
    rng = np.random.default_rng(seed)
    return Explanation(id=exp.id, tokens=exp.tokens, spectrogram_saliency=rng.random(
        exp.spectrogram_saliency.shape, np.float32), prefix_saliency=np.zeros_like(exp.prefix_saliency),
        prefix_tokens=exp.prefix_tokens, text=exp.text)


def masked_outputs(model, feats: dict, targets: list, cfg: SPESConfig, search, n: int) -> dict[str, list[str]]:
    """What ``model`` says (``search``) on the first ``n`` spectrogram masks of each clip's sweep."""
    plan = sweep.make_plan(model.module, cfg)
    out = {}
    for (utt, f), tokens in zip(feats.items(), targets):
        inputs = sweep.prepare(f, tokens, segment(f, cfg), utt, cfg, plan, layout=model.layout(f))
        masked = [np.asarray(plan.probe.spectrogram_masks(inputs, jnp.int32(g))[0])[:f.shape[0]] for g in range(n)]
        out[utt] = [h[0].text if h else "" for h in model.decode(masked, search, batch_size=n)]
    return out


def segments(exp: Explanation) -> list[int]:
    """SLIC's segment counts per level (a file read back stores the list as text)."""
    n = exp.meta["n_segments"]
    return json.loads(n) if isinstance(n, str) else list(n)


def human_references() -> dict[str, str]:
    """Clip id -> reference transcript, from the fixtures' index and pocketsphinx-testdata's files."""
    refs = {}
    index = os.path.join(FIXTURES, "reference", "index.json")
    if os.path.exists(index):
        with open(index) as f:
            refs.update({k: v["reference_transcript"] for k, v in json.load(f)["clips"].items()})
    for path in glob.glob("/usr/share/pocketsphinx/test/data/*/*transcription"):
        with open(path) as f:
            for line in f:  # "<s> words </s> (file id)"
                words, _, fid = line.rpartition("(")
                refs[fid.strip(" )\n")] = words.replace("<s>", "").replace("</s>", "").strip()
    return refs


def explanations_of(model, occlusion: str, feats: dict, targets: list, cfg: SPESConfig, maps: str | None
                    ) -> tuple[list[Explanation], dict]:
    """The clips' explanations with ``occlusion`` and their timing: read from ``maps``/<occlusion>.h5 (and
    its .json timing) when an earlier run left them there, else computed (and written there)."""
    h5, timing = (os.path.join(maps, f"{occlusion}.{ext}") if maps else None for ext in ("h5", "json"))
    if h5 and os.path.exists(h5):
        exps = load_explanations(h5)
        if sorted(exps) != sorted(feats) or any(e.n_masks != cfg.masks_per_level * cfg.n_levels
                                                for e in exps.values()):
            raise SystemExit(f"{h5} holds other clips or mask counts; remove it or choose another --maps")
        with open(timing) as f:
            return [exps[i] for i in feats], json.load(f)
    start = time.perf_counter()
    exps = explain(model.configured(occlusion=occlusion), list(feats.values()), cfg, ids=list(feats),
                   targets=targets, progress=True)
    seconds = time.perf_counter() - start
    cost = {"seconds": seconds, "s_per_mask": seconds / (len(feats) * cfg.masks_per_level * cfg.n_levels)}
    if maps:
        os.makedirs(maps, exist_ok=True)
        save_explanations(h5, exps)
        with open(timing, "w") as f:
            json.dump(cost, f)
    return exps, cost


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(FIXTURES, "model", "whisper-tiny.en"))
    ap.add_argument("--clips", nargs="+", default=sorted(glob.glob(os.path.join(FIXTURES, "audio", "*.wav"))),
                    help="16 kHz WAVs (default: the Whisper fixtures' clips)")
    ap.add_argument("--masks", type=int, default=60, help="spectrogram masks per explanation")
    ap.add_argument("--token-masks", type=int, default=0)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--step", type=int, default=5, help="deletion step in percent")
    ap.add_argument("--max-tokens", type=int, default=40,
                    help="decoding limit of the deletion curves: heavily deleted inputs make Whisper hallucinate "
                         "(\"Thank you for watching.\" repeated) up to this length")
    ap.add_argument("--deletions", nargs="*", choices=OCCLUSIONS, default=["floor", "zero"],
                    help="what deleted cells become in the deletion curves (none: skip them)")
    ap.add_argument("--masked", type=int, default=6, help="masks per clip whose decoded output is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="whisper_occlusion.json")
    ap.add_argument("--maps", help="directory keeping each option's explanations (<occlusion>.h5): a rerun "
                                   "with the same clips and masks reads them instead of explaining again")
    args = ap.parse_args()
    enable_compile_cache()

    base = load_model(args.model)
    ids = [os.path.splitext(os.path.basename(p))[0] for p in args.clips]
    audio = dict(zip(ids, args.clips))
    feats = {i: base.features(p) for i, p in audio.items()}
    cfg = base.sweep_config(SPESConfig.asr(n_masks=args.masks, n_token_masks=args.token_masks,
                                          batch_size=args.batch, seed=args.seed))
    # Deletion curves decode greedily: heavily deleted inputs hallucinate to the length limit, and beam 5
    # made one curve of 4 clips take 13 minutes on the 2-core CPU.
    greedy = dataclasses.replace(base.search, beam=1, max_len_b=args.max_tokens)
    humans = human_references()
    result = {"device": device_name(), "model": os.path.basename(os.path.normpath(args.model)),
              "config": json.loads(cfg.to_json()), "deletion_step": args.step,
              "deletion_search": dataclasses.asdict(greedy), "clips": {}, "explain": {}, "deletion": {}}

    def save():
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    start = time.perf_counter()
    hyps = base.decode(list(feats.values()))
    targets = [list(h[0].tokens) for h in hyps]
    result["decode_s"] = time.perf_counter() - start
    # The deletion reference: what the same greedy search says on the undeleted input (so p = 0 scores 0).
    references = {i: h[0].text for i, h in zip(ids, base.decode(list(feats.values()), greedy))}
    for i, h in zip(ids, hyps):
        human = humans.get(i)
        result["clips"][i] = {"frames": int(feats[i].shape[0]), "explained": h[0].text, "greedy": references[i],
                              "transcript": human, "wer_explained_vs_transcript": None if human is None else
                              corpus_score("wer", [normalized(human)], [normalized(h[0].text)])}
    print(f"{device_name()}; {len(ids)} clips, {args.masks} masks each; decoded in {result['decode_s']:.1f} s",
          flush=True)

    # How destructive one SPES mask is: WER of the outputs on the sweep's first masked inputs.
    result["masked"] = {}
    for occlusion in OCCLUSIONS:
        texts = masked_outputs(base.configured(occlusion=occlusion), feats, targets, cfg, greedy, args.masked)
        result["masked"][occlusion] = {"wer": corpus_score("wer", [normalized(references[i]) for i in ids
                                                                   for _ in texts[i]],
                                                           [normalized(t) for i in ids for t in texts[i]]),
                                       "outputs": texts}
        print(f"{args.masked} masks per clip occluded with {occlusion!r}: WER {result['masked'][occlusion]['wer']:.1f}",
              flush=True)
    save()

    explanations = {}
    for occlusion in OCCLUSIONS:  # the first also compiles the sweep (one program serves all three)
        exps, cost = explanations_of(base, occlusion, feats, targets, cfg, args.maps)
        explanations[occlusion] = exps
        result["explain"][occlusion] = {**cost, "size_auc": size_curve(exps).auc,
                                        "segments": {e.id: segments(e) for e in exps}}
        print(f"explained with {occlusion!r} in {cost['seconds']:.0f} s", flush=True)
        save()
    explanations["random"] = [random_ranking(e, args.seed) for e in explanations[base.occlusion]]

    for deletion in args.deletions:
        model = base.configured(occlusion=deletion)
        result["deletion"][deletion] = {}
        for name, exps in explanations.items():
            start = time.perf_counter()
            curve = perturbation_curve(model, exps, audio, references, "deletion", step=args.step, search=greedy)
            wer = wer_curve(curve, references)
            result["deletion"][deletion][name] = {
                "auc": auc(wer, curve.percentages / 100), "wer": wer.tolist(), "seconds": time.perf_counter() - start,
                "hypotheses": curve.hypotheses}
            print(f"deletion by {deletion!r}, maps of {name!r}: AUC {result['deletion'][deletion][name]['auc']:.1f}",
                  flush=True)
            save()

    print("deletion AUC (rows: deletion value; columns: the maps' occlusion value)")
    names = list(explanations)
    print(" " * 8 + "".join(f"{n:>9}" for n in names))
    for deletion, row in result["deletion"].items():
        print(f"{deletion:<8}" + "".join(f"{row[n]['auc']:9.1f}" for n in names))
    print("size AUC " + "  ".join(f"{o} {result['explain'][o]['size_auc']:.1f}" for o in OCCLUSIONS))


if __name__ == "__main__":
    main()
