"""Train a small FBK-architecture Conformer on synthetic speech, as the paper's models are trained:
label-smoothed cross-entropy plus an auxiliary CTC loss on an inner encoder layer, Adam with warm-up
and inverse-square-root decay, and the average of the last checkpoints.

    python -m spes_jax.training train --task asr --out models/asr   # about an hour on 2 CPU cores

Deterministic from --seed. Writes the model directory (the format ``spes-jax convert`` writes), a
training curve (curve.json) and the held-out evaluation (eval.json) beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._shapes import round_up
from ..models import ModelConfig, S2TModel, init_params
from ..models.io import read_model_dir, save_model_dir
from ..speech_model import SpeechToTextModel, load_model
from ..text import EOS, Dictionary, Tokenizer
from .data import Utterance, build, export, wer


def small_config(vocab_size: int, ctc_pieces: int | None = None) -> ModelConfig:
    """The embedded models' size: 4 Conformer layers (d 96, 4 heads, kernel 15), 2 decoder layers. The CTC
    head covers ``ctc_pieces`` pieces (default: the target dictionary's) and the blank."""
    return ModelConfig(conv_channels=192, encoder_embed_dim=96, encoder_layers=4, encoder_attention_heads=4,
                       conformer_conv_kernel_size=15, decoder_embed_dim=96, decoder_layers=2,
                       decoder_attention_heads=4, decoder_ffn_embed_dim=384, vocab_size=vocab_size,
                       ctc_encoder_layer=3, ctc_vocab_size=(ctc_pieces or vocab_size) + 1,
                       max_target_positions=256)


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: str,
                    model_type: str = "bpe") -> tuple[str, str]:
    """A SentencePiece model with fairseq's special ids, and the matching dictionary file."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
                                   model_type=model_type, character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2,
                                   unk_id=3, hard_vocab_limit=False, minloglevel=2)
    spm_path = os.path.join(out_dir, "spm.model")
    with open(spm_path, "wb") as f:
        f.write(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    dictionary = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [sp.id_to_piece(i) for i in range(4, sp.get_piece_size())])
    dict_path = os.path.join(out_dir, "dict.txt")
    dictionary.save(dict_path)
    return dict_path, spm_path


def _tokenizer(texts: list[str], vocab_size: int, out_dir: str) -> tuple[Tokenizer, str, str]:
    """A tokenizer trained on the non-empty ``texts`` (no-speech examples have none), its dictionary and
    SentencePiece files written to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    dict_path, spm_path = train_tokenizer([t for t in texts if t], vocab_size, out_dir)
    return Tokenizer(Dictionary.load(dict_path), spm_path), dict_path, spm_path


# Parameters indexed by the vocabulary, and the axis: under another tokenizer they are carried over
# per piece. The CTC head has one more output, the blank, last in both models.
VOCABULARY_AXES = {("decoder", "embed_tokens", "embedding"): 0, ("decoder", "output_projection", "kernel"): 1,
                   ("encoder", "ctc_fc", "kernel"): 1, ("encoder", "ctc_fc", "bias"): 0}


def init_from(params: dict, model_dir: str, dictionary: Dictionary,
              ctc_dictionary: Dictionary | None = None) -> tuple[dict, dict]:
    """``params`` started from the model at ``model_dir``: every parameter with the same path and shape,
    and the vocabulary-indexed ones row by row for the pieces both dictionaries hold (the others keep
    their random initialisation). The CTC head is matched by ``ctc_dictionary`` (default
    ``dictionary``) against the starting model's CTC pieces; a head trained on source transcripts
    (``--ctc-text source``) is not carried over, its dictionary is not kept. FBK's recipes start a model
    from a trained encoder the same way; here it carries an earlier training's acoustic model and decoder
    over to harder data. Returns the parameters and the starting model's ``source`` record."""
    _, source, config, dict_path, _ = read_model_dir(model_dir)
    old_ids = {s: i for i, s in enumerate(Dictionary.load(dict_path).symbols)}
    index_of = lambda d: np.array([old_ids.get(s, -1) for s in d.symbols])
    new_to_old = index_of(dictionary)
    own_ctc = config.get("source", {}).get("ctc_text", "target") == "target"
    ctc_to_old = index_of(ctc_dictionary or dictionary) if own_ctc else None
    flat = {tuple(k.key for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(source)[0]}
    copied, pieces = 0, int((new_to_old >= 0).sum())

    def take(path, leaf):
        nonlocal copied
        key = tuple(k.key for k in path)
        old = flat.get(key)
        if old is None:
            return leaf
        if key in VOCABULARY_AXES:
            axis = VOCABULARY_AXES[key]
            index = ctc_to_old if key[1] == "ctc_fc" else new_to_old
            if index is None:
                return leaf
            if key[1] == "ctc_fc":  # the blank, last in both heads
                index = np.append(index, old.shape[axis] - 1)
            new = np.moveaxis(np.array(leaf), axis, 0)
            new[index >= 0] = np.moveaxis(old, axis, 0)[index[index >= 0]]
            copied += 1
            return jnp.asarray(np.moveaxis(new, 0, axis), leaf.dtype)
        if old.shape != leaf.shape:
            return leaf
        copied += 1
        return jnp.asarray(old, leaf.dtype)

    params = jax.tree_util.tree_map_with_path(take, params)
    print(f"init: {copied} of {len(jax.tree_util.tree_leaves(params))} parameter arrays from {model_dir} "
          f"({pieces} of {len(new_to_old)} pieces shared)", flush=True)
    return params, config.get("source", {})


def _spec_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = x.copy()
    T, C = x.shape
    for _ in range(2):
        w = rng.integers(0, 13)
        c0 = rng.integers(0, C - w)
        x[:, c0:c0 + w] = 0
        w = rng.integers(0, min(25, T // 5) + 1)
        t0 = rng.integers(0, T - w + 1)
        x[t0:t0 + w] = 0
    return x


def batches(utts: list[Utterance], targets: list[list[int]], rng: np.random.Generator, max_frames: int,
            augment: bool, frame_bucket: int = 128, token_bucket: int = 16,
            ctc_targets: list[list[int]] | None = None):
    """One epoch of batches (feats, lengths, prev, tgt, ctc, real). Frames are padded to multiples of
    frame_bucket and tokens to token_bucket, and the batch size is fixed per frame bucket
    (max_frames // frames), so few shapes are ever compiled (each shape is one compilation of the
    training step). ``ctc`` holds the CTC labels, padded like ``tgt``: ``ctc_targets`` (e.g. the source
    transcript's pieces), by default the targets without </s>."""
    if ctc_targets is None:
        ctc_targets = [y[:-1] for y in targets]
    T_of = lambda i: round_up(utts[i].features.shape[0], frame_bucket)
    L_of = lambda i: round_up(max(len(targets[i]), len(ctc_targets[i])), token_bucket)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i in rng.permutation(len(utts)):
        by_shape.setdefault((T_of(i), L_of(i)), []).append(int(i))
    groups = []
    for (T, L), idx in by_shape.items():
        B = max(1, max_frames // T)
        groups += [(T, L, B, idx[k:k + B]) for k in range(0, len(idx), B)]
    rng.shuffle(groups)
    for T, L, B, g in groups:
        feats = np.zeros((B, T, 80), np.float32)
        lengths = np.full(B, T, np.int32)
        prev = np.ones((B, L), np.int32)
        tgt = np.ones((B, L), np.int32)
        ctc = np.ones((B, L), np.int32)
        for row, i in enumerate(g):
            f = utts[i].features.astype(np.float32)
            feats[row, : len(f)] = _spec_augment(f, rng) if augment else f
            lengths[row] = len(f)
            y = targets[i]
            tgt[row, : len(y)] = y
            prev[row, : len(y)] = [EOS] + y[:-1]
            ctc[row, : len(ctc_targets[i])] = ctc_targets[i]
        yield feats, lengths, prev, tgt, ctc, np.arange(B) < len(g)


def lr_schedule(peak: float, warmup: int, steps: int, cooldown: int = 0):
    """Linear warm-up to `peak`, inverse-square-root decay (fairseq's schedule), and, when cooldown > 0,
    a linear decay to zero over the last `cooldown` steps: the step size noise that the inverse square
    root leaves is what keeps a small model's final checkpoints apart."""
    def schedule(s):
        lr = peak * jnp.minimum((s + 1) / warmup, jnp.sqrt(warmup / (s + 1)))
        return lr * jnp.clip((steps - s) / cooldown, 0.0, 1.0) if cooldown else lr
    return schedule


# The auxiliary CTC loss's weight every shipped model was trained with; a model records it only when it differs.
CTC_WEIGHT = 0.5


def make_loss(model: S2TModel, cfg: ModelConfig, smoothing: float = 0.1, ctc_weight: float = CTC_WEIGHT):
    def loss_fn(params, feats, lengths, prev, tgt, ctc_labels, real):
        logits, enc = model.apply({"params": params}, feats, lengths, prev)
        mask = (tgt != cfg.pad) & real[:, None]
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
        smooth = -logp.mean(axis=-1)
        ce = jnp.sum(((1 - smoothing) * nll + smoothing * smooth) * mask) / mask.sum()
        label_pad = (ctc_labels == cfg.pad).astype(jnp.float32)
        frames = enc.ctc_logits.shape[1]
        logit_pad = (jnp.arange(frames)[None] >= enc.ctc_lengths[:, None]).astype(jnp.float32)
        ctc = optax.ctc_loss(enc.ctc_logits, logit_pad, ctc_labels, label_pad, blank_id=cfg.ctc_vocab_size - 1)
        ctc = jnp.sum(ctc * real) / jnp.maximum(jnp.sum((1 - label_pad) * real[:, None]), 1)
        return ce + ctc_weight * ctc, (ce, ctc)

    return loss_fn


def optimizer(schedule) -> optax.GradientTransformation:
    """Adam as fairseq's speech recipes set it, after clipping the gradient's global norm to 10."""
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule, b1=0.9, b2=0.98, eps=1e-8))


def make_step(loss_fn, opt: optax.GradientTransformation):
    """The compiled training step: (params, opt_state, *batch) -> (params, opt_state, loss, ce, ctc)."""
    @jax.jit
    def step(params, state, *batch):
        (loss, (ce, ctc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss, ce, ctc

    return step


def evaluate(model: SpeechToTextModel, test: list[Utterance], task: str) -> dict:
    hyps = [h[0].text for h in model.decode([u.features.astype(np.float32) for u in test], batch_size=16)]
    refs = [u.en if task == "asr" else u.de for u in test]
    result = {"n": len(test), "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:10]]}
    if task == "asr":
        result["wer"] = wer(refs, hyps)
    else:
        import sacrebleu

        result["bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
    return result


def evaluate_main(argv=None):
    """python -m spes_jax.training evaluate --model DIR --task asr|st [--test-sentences N]"""
    ap = argparse.ArgumentParser(prog="python -m spes_jax.training evaluate",
                                 description="Score a model on the held-out synthetic test set")
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", choices=["asr", "st"], default="asr")
    ap.add_argument("--test-sentences", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    _, test = build(0, args.test_sentences, seed=args.seed)
    result = evaluate(load_model(args.model), test, args.task)
    print(json.dumps(result, indent=1, ensure_ascii=False))


def parser() -> argparse.ArgumentParser:
    """The training command's arguments (an embedded model's stages are lists of them)."""
    ap = argparse.ArgumentParser(prog="python -m spes_jax.training train", description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["asr", "st"], default="asr")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-sentences", type=int, default=6000)
    ap.add_argument("--test-sentences", type=int, default=200)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--max-frames", type=int, default=12000, help="padded frames per batch")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--cooldown", type=int, default=0,
                    help="decay the learning rate linearly to zero over this many final steps")
    ap.add_argument("--ctc-weight", type=float, default=CTC_WEIGHT, help="weight of the auxiliary CTC loss")
    ap.add_argument("--ctc-text", choices=["target", "source"], default="target",
                    help="what the auxiliary CTC loss transcribes; source (--task st): the English transcript, "
                    "with its own dictionary, as FBK's ST recipes do")
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--average", type=int, default=5, help="average this many of the last checkpoints")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--samples", default=None, help="also export 4 held-out utterances (WAV + timings) here")
    ap.add_argument("--data", choices=["spliced", "robust"], default="spliced",
                    help="spliced: the shipped models' data; robust: continuous + spliced + no-speech, augmented")
    ap.add_argument("--mix", default="continuous=0.5,spliced=0.25,nospeech=0.1,multi=0.15",
                    help="robust: source proportions (multi: 2-5 sentences in one example)")
    ap.add_argument("--noise", type=float, default=0.5, help="robust: probability of additive noise")
    ap.add_argument("--edge", type=float, default=0.2,
                    help="robust: probability that an example starts (and, separately, ends) without silence")
    ap.add_argument("--spliced-voices", type=int, default=32, help="robust: voice settings of the word bank")
    ap.add_argument("--eval-long", type=int, default=20, help="robust: long held-out inputs scored after training")
    ap.add_argument("--init-from", default=None,
                    help="start from this model directory's parameters (vocabulary-indexed ones per shared piece)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="the longest input the model handles (measured on the long held-out inputs); longer "
                    "inputs are refused with a clear message")
    ap.add_argument("--frame-bucket", type=int, default=128,
                    help="pad frames to multiples of this and tokens to 1/8 of it (robust data: 256, "
                    "fewer compiled shapes)")
    return ap


def source_record(args: argparse.Namespace) -> dict:
    """What a model directory's ``source`` keeps of the run that trained it (without ``init_from``)."""
    source = {"recipe": "spes_jax.training.train", "task": args.task, "seed": args.seed, "steps": args.steps,
              "train_sentences": args.train_sentences, "lr": args.lr, "warmup": args.warmup}
    if args.cooldown:
        source["cooldown"] = args.cooldown
    if args.ctc_weight != CTC_WEIGHT:
        source["ctc_weight"] = args.ctc_weight
    if args.ctc_text != "target":
        source["ctc_text"] = args.ctc_text
    if args.data == "robust":
        from .robust import Mix

        mix = Mix.parse(args.mix, noise=args.noise, edge=args.edge)
        source.update(data="robust", mix=vars(mix), spliced_voices=args.spliced_voices)
    return source


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    if not 0 <= args.cooldown <= args.steps:
        ap.error(f"--cooldown must lie in [0, --steps = {args.steps}], got {args.cooldown}")
    if args.ctc_weight < 0:
        ap.error(f"--ctc-weight must be >= 0, got {args.ctc_weight}")
    if args.ctc_text == "source" and args.task != "st":
        ap.error("--ctc-text source is for --task st (in ASR the source is the target)")
    for flag, p in (("--noise", args.noise), ("--edge", args.edge)):
        if not 0 <= p <= 1:
            ap.error(f"{flag} is a probability, got {p}")

    t0 = time.time()
    if args.data == "robust":  # held-out sets (a)-(d) and long inputs are built and scored after training
        from .robust import Mix, build_training

        mix = Mix.parse(args.mix, noise=args.noise, edge=args.edge)
        train, test = build_training(args.train_sentences, mix, args.seed, args.spliced_voices), []
    else:
        train, test = build(args.train_sentences, args.test_sentences, seed=args.seed)
    print(f"data: {len(train)} train / {len(test)} held-out utterances in {time.time() - t0:.0f} s", flush=True)
    if args.samples:
        export(test[:4], args.samples)
    text = (lambda u: u.en) if args.task == "asr" else (lambda u: u.de)
    work = tempfile.mkdtemp(prefix="spes-jax-train-")
    tokenizer, dict_path, spm_path = _tokenizer([text(u) for u in train], args.vocab, work)
    targets = [tokenizer.encode(text(u)) for u in train]
    ctc_dictionary, ctc_targets = None, None
    if args.ctc_text == "source":  # a second SentencePiece model, English, for the CTC head only
        ctc_tokenizer = _tokenizer([u.en for u in train], args.vocab, os.path.join(work, "ctc"))[0]
        ctc_dictionary = ctc_tokenizer.dictionary
        ctc_targets = [ctc_tokenizer.encode(u.en)[:-1] for u in train]
    cfg = small_config(len(tokenizer.dictionary), ctc_dictionary and len(ctc_dictionary))
    model = S2TModel(cfg)
    params = init_params(cfg, seed=args.seed)
    init_source = None
    if args.init_from:
        params, init_source = init_from(params, args.init_from, tokenizer.dictionary, ctc_dictionary)
    schedule = lr_schedule(args.lr, args.warmup, args.steps, args.cooldown)
    opt = optimizer(schedule)
    state = opt.init(params)
    step = make_step(make_loss(model, cfg, ctc_weight=args.ctc_weight), opt)

    rng = np.random.default_rng(args.seed)
    curve, snapshots, n = [], [], 0
    every = max(args.steps // (4 * args.average), 1)
    while n < args.steps:
        for batch in batches(train, targets, rng, args.max_frames, augment=True, frame_bucket=args.frame_bucket,
                             token_bucket=args.frame_bucket // 8, ctc_targets=ctc_targets):
            params, state, loss, ce, ctc = step(params, state, *batch)
            n += 1
            if n % 50 == 0:
                curve.append({"step": n, "loss": float(loss), "ce": float(ce), "ctc": float(ctc),
                              "lr": float(schedule(n)), "seconds": round(time.time() - t0, 1)})
                print(json.dumps(curve[-1]), flush=True)
            if n > args.steps - every * args.average and n % every == 0:
                snapshots.append(jax.device_get(params))
            if n >= args.steps:
                break
    averaged = jax.tree_util.tree_map(lambda *xs: np.mean(xs, axis=0), *snapshots[-args.average:])
    source = source_record(args)
    if init_source is not None:
        source["init_from"] = init_source
    # A robust model is trained to answer silence with just </s>; fairseq's min_len=1 would forbid that.
    search = {"min_len": 0} if args.data == "robust" else None
    out = save_model_dir(args.out, cfg, averaged, dict_path, spm_path, source=source, overwrite=True, search=search,
                         data={"max_seconds": args.max_seconds} if args.max_seconds else None)
    if args.data == "robust":
        from .robust import eval_sets, score

        model_out = load_model(out)
        result = {name: score(model_out, utts, args.task)
                  for name, utts in eval_sets(args.test_sentences, args.eval_long).items()}
    else:
        result = evaluate(load_model(out), test, args.task)
    result.update(seconds=round(time.time() - t0), steps=args.steps)
    with open(os.path.join(out, "..", f"{os.path.basename(out)}_curve.json"), "w") as f:
        json.dump(curve, f)
    with open(os.path.join(out, "..", f"{os.path.basename(out)}_eval.json"), "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
    print(json.dumps({k: ({m: x for m, x in v.items() if m != "failures"} if isinstance(v, dict) else v)
                      for k, v in result.items() if k != "examples"}))
