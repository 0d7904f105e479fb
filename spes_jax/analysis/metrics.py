"""Faithfulness and compactness of explanations: deletion, insertion and size (SPES.md, Evaluation).

Definitions follow FBK-fairseq's ``xai_metrics`` scripts:

- deletion / insertion: the sentence-level map (mean of the normalised token maps) ranks the T x C
  features; at p = 0, 5, ..., 100 % the ``T * C * p // 100`` most salient features are deleted
  (deletion) or all but them (insertion), the model decodes again with beam search, the whole set is
  scored against the references, and the AUC is the trapezoid rule over p (0..100 x score). A deleted
  feature becomes what the model occludes with (``model.layout(features).fill``): 0 for FBK's
  utterance-normalised features, as the reference; Whisper's occlusion option (docs/spes.md);
- size: for thresholds 0, 0.05, ..., 0.95, 1 the percentage of normalised features >= the threshold
  (spectrogram: all K x T x C cells; prefix: the causal cells), averaged over utterances; AUC over
  the thresholds (0..1 x percentage).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..decoding import SearchConfig
from ..errors import SpesError, count
from ..explanation import Explanation

METRICS = ("deletion", "insertion")
SCORERS = ("wer", "wer_max", "wer_sentence_max", "bleu")
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 only has trapz


def auc(y: Sequence[float], x: Sequence[float]) -> float:
    """Area under the curve by the trapezoid rule (``np.trapz``, as the reference)."""
    return float(_trapezoid(np.asarray(y, np.float64), np.asarray(x, np.float64)))


def percentages(step: int = 5) -> np.ndarray:
    """(P,) levels 0, step, ..., 100."""
    if not 0 < step <= 100 or 100 % step:
        raise SpesError(f"the percentage step must divide 100, got {step}")
    return np.arange(0, 101, step)


def thresholds(step: int = 5) -> np.ndarray:
    """(P,) size thresholds 0, step/100, ..., < 1, then 1 (the reference's list)."""
    if not 0 < step < 100:
        raise SpesError(f"the threshold step must be in 1..99, got {step}")
    return np.array([t / 100 for t in range(0, 100, step)] + [1.0])


def zeroed_cells(heatmap: np.ndarray, levels: np.ndarray, metric: str = "deletion",
                 order: np.ndarray | None = None) -> np.ndarray:
    """Which features each level sets to 0.

    heatmap: (T, C) sentence-level saliency; levels: (P,) percentages; order: the ascending ranking
    of the flattened heatmap (default: a stable argsort; the reference's torch argsort breaks ties
    in no fixed order). Returns (P, T, C) bool, True = zeroed.
    """
    if metric not in METRICS:
        raise SpesError(f"metric must be one of {METRICS}, got {metric!r}")
    n = heatmap.size
    order = np.argsort(heatmap.ravel(), kind="stable") if order is None else np.asarray(order)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)  # 0 = least salient
    kept = n - n * np.asarray(levels, np.int64) // 100  # cells below this rank are not "the top n"
    top = rank[None, :] >= kept[:, None]
    out = top if metric == "deletion" else ~top
    return out.reshape(len(levels), *heatmap.shape)


# -- scorers (fairseq's ``wer``, FBK's ``wer_max``, and ``sacrebleu``) --------------------------------

def _edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def corpus_score(scorer: str, references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Scores a set of hypotheses against references.

    ``wer``: 100 x total word edits / total reference words (whitespace words, case and punctuation
    kept, as fairseq's scorer); ``wer_max``: ``min(100, wer)`` (FBK's scorer, used in the paper);
    ``wer_sentence_max``: each sentence's edits capped at its length before summing (no sentence
    counts for more than 100 %); ``bleu``: sacreBLEU on 13a-tokenised text (fairseq's ``sacrebleu``
    scorer: ``corpus_bleu(..., tokenize="none")`` after the 13a tokenizer).
    """
    if len(references) != len(hypotheses):
        raise SpesError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if scorer == "bleu":
        import sacrebleu
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        tok = Tokenizer13a()
        return float(sacrebleu.corpus_bleu([tok(h) for h in hypotheses], [[tok(r) for r in references]],
                                           tokenize="none").score)
    if scorer not in SCORERS:
        raise SpesError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    edits, words = 0, 0
    for ref, hyp in zip(references, hypotheses):
        r = ref.split()
        e = _edit_distance(r, hyp.split())
        edits += min(e, len(r)) if scorer == "wer_sentence_max" else e
        words += len(r)
    wer = 100.0 * edits / words if words else 0.0
    return min(100.0, wer) if scorer == "wer_max" else wer


def default_scorer(task: str) -> str:
    """The paper's deletion scorer: FBK's ``wer_max`` for ASR, BLEU for speech translation."""
    return "bleu" if task == "st" else "wer_max"


def higher_is_better(metric: str, scorer: str) -> bool:
    """Deletion with WER and insertion with BLEU: a faithful explanation gives a high AUC."""
    error_rate = scorer != "bleu"
    return error_rate == (metric == "deletion")


# -- deletion / insertion -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve over a corpus.

    percentages: (P,); scores: (P,) corpus scores; hypotheses: id -> the P decoded texts.
    """

    metric: str
    scorer: str
    percentages: np.ndarray
    scores: np.ndarray
    hypotheses: dict[str, list[str]] = field(default_factory=dict)

    @property
    def auc(self) -> float:
        """AUC over p in percent (0..100): the value FBK's ``auc_score.py`` prints."""
        return auc(self.scores, self.percentages)

    @property
    def auc_fraction(self) -> float:
        """AUC over p as a fraction (0..1), i.e. ``auc / 100``: the scale of the paper's Table 1."""
        return auc(self.scores, self.percentages / 100)

    def baseline_note(self, references: Mapping[str, str]) -> str | None:
        """A warning when the model's output on the unperturbed audio (the curve's 0 % point) already
        scores poorly against ``references`` (WER over 30, BLEU under 30), or None: the curve then says
        little about the explanations. For WER it says whether writing both in spoken form (case,
        punctuation, numerals) explains it, as with Whisper's "10 meters." against "ten meters"."""
        from ..alignment import spoken_form

        level = 0 if self.metric == "deletion" else -1
        score = float(self.scores[level])
        wer = self.scorer.startswith("wer")
        if not ((wer and score > 30) or (self.scorer == "bleu" and score < 30)):
            return None
        start = (f"the model's output on the unperturbed audio already scores {self.scorer} {score:.1f} against the "
                 "references")
        end = ": it does not recognise this speech well, so the curve says little about the explanations"
        if not wer:
            return start + end
        ids = list(self.hypotheses)
        spoken = corpus_score(self.scorer, [spoken_form(references[i]) for i in ids],
                              [spoken_form(self.hypotheses[i][level]) for i in ids])
        if spoken > score / 2:
            return start + end
        return (f"{start}, but {spoken:.1f} with both written in spoken form (case, punctuation, numerals): most of "
                "it is formatting, which the paper's scorer counts; references in the model's own style (e.g. its "
                "unperturbed hypotheses) measure only what deletion changes")

    def to_dict(self) -> dict:
        # "auc" is the number every command prints (the paper's scale, as the size curve's "auc").
        return {"metric": self.metric, "scorer": self.scorer, "auc": self.auc_fraction, "auc_over_percent": self.auc,
                "higher_is_better": higher_is_better(self.metric, self.scorer),
                "percentages": self.percentages.tolist(), "scores": self.scores.tolist(),
                "hypotheses": self.hypotheses}


def perturbation_curve(model, explanations: Iterable[Explanation], audio: Mapping[str, object],
                       references: Mapping[str, str], metric: str = "deletion", scorer: str = "wer_max",
                       step: int = 5, search: SearchConfig | None = None, greedy: bool = False,
                       progress: Callable[[int], None] | bool | None = None) -> PerturbationCurve:
    """Deletion (or insertion) curve of explanations of ``model``'s hypotheses.

    audio: id -> WAV path / waveform / raw fbank of every explained utterance; references: id ->
    reference text. Deleted features take the model's occlusion value (``layout(features).fill``,
    0 when the layout gives none). All levels of one utterance are decoded together in one batched
    beam search (``greedy``: greedy search, faster; the paper's curves use the beam). ``progress``:
    called with 1 per utterance decoded, or True for a progress bar on stderr.
    """
    levels = percentages(step)
    explanations = list(explanations)
    if progress is True:
        from ..driver import progress_bar

        with contextlib.closing(progress_bar(
                metric, len(explanations), "utterance",
                f"decoding {count(len(levels), 'level')} of {count(len(explanations), 'utterance')} with "
                + ("greedy search" if greedy else "beam search (--greedy is faster)"))) as bar:
            return perturbation_curve(model, explanations, audio, references, metric, scorer, step, search, greedy,
                                      bar.update)
    hyps: dict[str, list[str]] = {}
    for exp in explanations:
        if exp.id not in audio or exp.id not in references:
            raise SpesError(f"no audio or reference for explained utterance {exp.id!r}")
        feats = model.features(audio[exp.id])
        heat = exp.sentence_level()
        if heat.shape != feats.shape:
            raise SpesError(f"{exp.id}: explanation covers {heat.shape} features but the audio gives "
                            f"{feats.shape}; was it explained from this audio?")
        layout = model.layout(feats)
        fill = np.float32(0) if layout.fill is None else np.asarray(layout.fill, np.float32)
        batch = np.where(zeroed_cells(heat, levels, metric), fill, feats[None])
        hyps[exp.id] = [h[0].text if h else "" for h in model.decode(list(batch), search, batch_size=len(levels),
                                                                       greedy=greedy, layout=layout)]
        if progress:
            progress(1)
    if not hyps:
        raise SpesError("no explanations to evaluate")
    ids = list(hyps)
    scores = np.array([corpus_score(scorer, [references[i] for i in ids], [hyps[i][p] for i in ids])
                       for p in range(len(levels))])
    return PerturbationCurve(metric, scorer, levels, scores, hyps)


# -- size ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SizeCurve:
    """Size over a corpus: thresholds (P,), spectrogram and prefix percentages (P,) each."""

    thresholds: np.ndarray
    spectrogram: np.ndarray
    prefix: np.ndarray

    @property
    def auc(self) -> float:
        """AUC of the spectrogram curve (the paper's Size)."""
        return auc(self.spectrogram, self.thresholds)

    @property
    def auc_prefix(self) -> float:
        return auc(self.prefix, self.thresholds)

    def to_dict(self) -> dict:
        return {"auc": self.auc, "auc_prefix": self.auc_prefix, "thresholds": self.thresholds.tolist(),
                "spectrogram": self.spectrogram.tolist(), "prefix": self.prefix.tolist()}


def size_curve(explanations: Iterable[Explanation], step: int = 5, normalize: bool = True) -> SizeCurve:
    """Size: % of features >= each threshold, per utterance, then averaged over the corpus.

    The maps are normalised first (``normalize=False`` counts the stored values as they are). A token
    whose maps are flat (all cells equal, so min-max normalisation is 0 / 0) counts as having no
    feature above any threshold: the reference's normaliser leaves NaN there, which no threshold
    passes, and a flat map singles nothing out.
    """
    ts = thresholds(step).astype(np.float32)[:, None, None]  # compared in float32, as the reference's torch
    spec_rows, prefix_rows = [], []
    for exp in explanations:
        e = exp.normalized() if normalize and not exp.is_normalized else exp
        K = e.prefix_saliency.shape[0]
        spec = np.asarray(e.spectrogram_saliency, np.float32).reshape(K, -1)
        causal = np.tril(np.ones((K, K), bool))
        prefix = np.where(causal, np.asarray(e.prefix_saliency, np.float32), -np.inf)
        informative = np.ones((K, 1), bool)
        if e.is_normalized:  # normalised maps reach 1 unless flat
            informative = ((spec.max(1) > 0) | (prefix.max(1) > 0))[:, None]
        spec_rows.append(((spec[None] >= ts) & informative).sum((1, 2)) / spec.size * 100)
        prefix_rows.append(((prefix[None] >= ts) & informative).sum((1, 2)) / causal.sum() * 100)
    if not spec_rows:
        raise SpesError("no explanations to measure")
    return SizeCurve(thresholds(step), np.mean(spec_rows, 0), np.mean(prefix_rows, 0))
