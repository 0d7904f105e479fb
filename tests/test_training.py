"""The synthetic-data generator and training recipe behind the embedded models."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from spes_jax.errors import SpesError
from spes_jax.text import Dictionary, Tokenizer
from spes_jax.training import grammar
from spes_jax.training.data import wer
from spes_jax.training.train import batches, make_loss, small_config, train_tokenizer

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_grammar_is_deterministic_and_reorders():
    a, b = grammar.sentences(300, 5), grammar.sentences(300, 5)
    assert a == b and len({s.en for s in a}) == 300
    kinds = {s.template for s in a}
    assert {"subordinate", "yesno", "transitive", "location", "count", "where", "colour"} <= kinds
    sub = next(s for s in a if s.template == "subordinate")
    assert ", dass " in sub.de and sub.de.rstrip(".").split()[-1] in {v[2] + v[1] for v in grammar.VERBS}
    yesno = next(s for s in a if s.template == "yesno")
    assert yesno.de.startswith("Sieht ") and yesno.en.endswith("?")
    held = grammar.sentences(50, 6, exclude={s.en for s in a})
    assert not {s.en for s in held} & {s.en for s in a}


def test_vocabulary_covers_every_sentence():
    vocab = set(grammar.vocabulary())
    for s in grammar.sentences(500, 1):
        assert set(w.strip(".,?") for w in s.en.split()) <= vocab


@needs_espeak
def test_word_spans_are_exact():
    from spes_jax.training.synth import WordBank, spoken_words, train_voices

    rng = np.random.default_rng(0)
    voice = train_voices(rng, 1)
    s = grammar.sentences(1, 3)[0]
    words = spoken_words(s.en)
    bank = WordBank(sorted(set(words)), voice)
    x, spans = bank.utterance(words, voice[0], rng)
    assert [w for w, _, _ in spans] == words
    ends = [0.0] + [e for _, _, e in spans]
    for (word, start, end), prev_end in zip(spans, ends):
        assert prev_end <= start < end <= len(x) / 16000
        rec = bank.audio[(word, voice[0].key())]
        seg = x[round(start * 16000):round(start * 16000) + len(rec)]
        gain = seg @ rec / (rec @ rec)  # the utterance's random gain
        assert 0.4 < gain < 1.1 and np.abs(seg - gain * rec).max() < 0.01  # the word is exactly there
    between = [x[round(e * 16000) + 1:round(s2 * 16000) - 1] for (_, _, e), (_, s2, _) in zip(spans, spans[1:])]
    assert np.abs(np.concatenate(between)).max() < 0.01  # only faint noise between words


def test_tokenizer_batches_and_loss(tmp_path):
    sents = grammar.sentences(200, 2)
    dict_path, spm_path = train_tokenizer([s.en for s in sents], 150, str(tmp_path))
    tok = Tokenizer(Dictionary.load(dict_path), spm_path)
    ids = tok.encode(sents[0].en)
    assert ids[-1] == 2 and tok.decode(ids) == sents[0].en

    class U:  # the fields batches() reads
        def __init__(self, n):
            self.features = np.random.default_rng(n).standard_normal((n, 80)).astype(np.float16)

    utts = [U(n) for n in (90, 130, 200, 260)]
    targets = [tok.encode(s.en) for s in sents[:4]]
    out = list(batches(utts, targets, np.random.default_rng(0), 1024, augment=True))
    assert sum(int(b[-1].sum()) for b in out) == 4
    for feats, lengths, prev, tgt, ctc, real in out:
        assert feats.shape[1] % 128 == 0 and prev.shape == tgt.shape and prev.shape[1] % 16 == 0
        assert np.all(prev[real, 0] == 2)
        np.testing.assert_array_equal(ctc, np.where(tgt == 2, 1, tgt))  # CTC: the targets without </s>
    cfg = small_config(len(tok.dictionary)).replace(encoder_layers=2, ctc_encoder_layer=1, decoder_layers=1)
    from spes_jax.models import S2TModel, init_params

    loss, (ce, ctc) = jax.jit(make_loss(S2TModel(cfg), cfg))(init_params(cfg), *out[0])
    assert np.isfinite(float(loss)) and float(ce) > 0 and float(ctc) > 0
    np.testing.assert_allclose(float(loss), float(ce) + 0.5 * float(ctc), rtol=1e-6)
    heavy, _ = jax.jit(make_loss(S2TModel(cfg), cfg, ctc_weight=2.0))(init_params(cfg), *out[0])
    np.testing.assert_allclose(float(heavy), float(ce) + 2.0 * float(ctc), rtol=1e-6)


def test_ctc_on_source_transcripts(tmp_path):
    """--ctc-text source: the CTC labels come from their own list (the English pieces of an ST example),
    the head is sized by their dictionary, and the loss sees them, not the German targets."""
    from spes_jax.models import S2TModel, init_params

    sents = grammar.sentences(200, 2)
    tokenizers = {}
    for lang, size in (("de", 150), ("en", 120)):
        (tmp_path / lang).mkdir()
        dict_path, spm_path = train_tokenizer([getattr(s, lang) for s in sents], size, str(tmp_path / lang))
        tokenizers[lang] = Tokenizer(Dictionary.load(dict_path), spm_path)
    de, en = tokenizers["de"], tokenizers["en"]
    utts = [type("U", (), {"features": np.random.default_rng(n).standard_normal((n, 80)).astype(np.float16)})()
            for n in (90, 100)]  # one frame bucket: one batch
    targets = [de.encode(s.de) for s in sents[:2]]
    sources = [en.encode(s.en)[:-1] for s in sents[:2]]
    (feats, lengths, prev, tgt, ctc, real), *_ = batches(utts, targets, np.random.default_rng(0), 1024,
                                                        augment=False, ctc_targets=sources)
    rows = [list(r[r != 1]) for r in ctc[real]]
    assert sorted(rows) == sorted(sources) and tgt.shape == ctc.shape
    cfg = small_config(len(de.dictionary), len(en.dictionary)).replace(encoder_layers=2, ctc_encoder_layer=1,
                                                                       decoder_layers=1)
    assert cfg.ctc_vocab_size == len(en.dictionary) + 1 != len(de.dictionary) + 1
    params = init_params(cfg)
    assert params["encoder"]["ctc_fc"]["kernel"].shape[-1] == len(en.dictionary) + 1
    loss_fn = jax.jit(make_loss(S2TModel(cfg), cfg))
    _, (_, with_source) = loss_fn(params, feats, lengths, prev, tgt, ctc, real)
    _, (_, shifted) = loss_fn(params, feats, lengths, prev, tgt, np.where(ctc > 4, ctc - 1, ctc), real)
    assert np.isfinite(float(with_source)) and float(with_source) != float(shifted)


def test_wer():
    assert wer(["a b c."], ["a b c."]) == 0
    assert wer(["a b c d"], ["a x c"]) == 50.0


def test_source_records_a_non_default_ctc_weight():
    from spes_jax.training.train import parser, source_record

    assert "ctc_weight" not in source_record(parser().parse_args(["--out", "m"]))
    assert source_record(parser().parse_args(["--out", "m", "--ctc-weight", "1"]))["ctc_weight"] == 1.0
    assert "ctc_text" not in source_record(parser().parse_args(["--out", "m", "--task", "st"]))
    st = parser().parse_args(["--out", "m", "--task", "st", "--ctc-text", "source"])
    assert source_record(st)["ctc_text"] == "source"


def test_ctc_on_the_source_is_refused_for_asr(capsys):
    from spes_jax.training.train import main

    with pytest.raises(SystemExit) as e:
        main(["--out", "m", "--task", "asr", "--ctc-text", "source"])
    assert e.value.code == 2 and "--ctc-text source is for --task st" in capsys.readouterr().err


def test_init_from_carries_parameters_and_shared_pieces_over(tiny_model, tmp_path):
    """--init-from: same-shaped parameters are copied; vocabulary-indexed ones per shared piece (the
    CTC blank included), new pieces keep their random rows."""
    import dataclasses

    from spes_jax.models import init_params
    from spes_jax.training.train import init_from
    from support import save_tiny_model

    src = jax.tree_util.tree_map(np.asarray, tiny_model.params)
    old = list(tiny_model.dictionary.symbols)
    new = Dictionary(old[:4] + ["\u2581new"] + old[4:][::-1])  # reordered, one piece more
    cfg = dataclasses.replace(tiny_model.cfg, vocab_size=len(new), ctc_vocab_size=len(new) + 1)
    fresh = init_params(cfg, seed=5)
    params, source = init_from(fresh, save_tiny_model(tiny_model, tmp_path), new)
    assert source == {}
    j, k = new.symbols.index(old[10]), new.symbols.index("\u2581new")
    emb, out = params["decoder"]["embed_tokens"]["embedding"], params["decoder"]["output_projection"]["kernel"]
    np.testing.assert_array_equal(emb[j], src["decoder"]["embed_tokens"]["embedding"][10])
    np.testing.assert_array_equal(out[:, j], src["decoder"]["output_projection"]["kernel"][:, 10])
    np.testing.assert_array_equal(emb[k], fresh["decoder"]["embed_tokens"]["embedding"][k])
    ctc, ctc_src = params["encoder"]["ctc_fc"], src["encoder"]["ctc_fc"]
    np.testing.assert_array_equal(ctc["kernel"][:, -1], ctc_src["kernel"][:, -1])  # the blank
    np.testing.assert_array_equal(ctc["bias"][j], ctc_src["bias"][10])
    np.testing.assert_array_equal(params["encoder"]["subsample"]["conv_layers_0"]["kernel"],
                                  src["encoder"]["subsample"]["conv_layers_0"]["kernel"])



def test_init_from_matches_the_ctc_head_by_its_own_dictionary(tiny_model, tmp_path):
    """An ST model with --ctc-text source started from an ASR model: the decoder's rows follow the target
    (German) dictionary, the CTC head's the English one; a head trained on source transcripts is not
    carried over (its dictionary is not kept)."""
    import dataclasses

    from spes_jax.models import init_params
    from spes_jax.training.train import init_from
    from support import save_tiny_model

    src = jax.tree_util.tree_map(np.asarray, tiny_model.params)
    old = list(tiny_model.dictionary.symbols)
    target = Dictionary(old[:4] + ["\u2581der", "\u2581die"])  # no piece shared with the old model
    ctc = Dictionary(old[:4] + old[4:][::-1])
    cfg = dataclasses.replace(tiny_model.cfg, vocab_size=len(target), ctc_vocab_size=len(ctc) + 1)
    fresh = init_params(cfg, seed=5)
    model_dir = save_tiny_model(tiny_model, tmp_path)
    params, _ = init_from(fresh, model_dir, target, ctc)
    j = ctc.symbols.index(old[10])
    np.testing.assert_array_equal(params["encoder"]["ctc_fc"]["bias"][j], src["encoder"]["ctc_fc"]["bias"][10])
    np.testing.assert_array_equal(params["decoder"]["embed_tokens"]["embedding"][4],
                                  fresh["decoder"]["embed_tokens"]["embedding"][4])

    config_path = os.path.join(model_dir, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["source"] = {"ctc_text": "source"}
    with open(config_path, "w") as f:
        json.dump(config, f)
    params, _ = init_from(fresh, model_dir, target, ctc)
    np.testing.assert_array_equal(params["encoder"]["ctc_fc"]["kernel"], fresh["encoder"]["ctc_fc"]["kernel"])

def test_lr_schedule_warms_up_decays_and_cools_down():
    """fairseq's inverse-square-root schedule; --cooldown only scales its last steps linearly to zero."""
    from spes_jax.training.train import lr_schedule

    plain, cooled = lr_schedule(1e-3, 100, 1000), lr_schedule(1e-3, 100, 1000, cooldown=400)
    lr = lambda f, s: float(f(s))
    assert lr(plain, 49) == pytest.approx(5e-4) and lr(plain, 99) == pytest.approx(1e-3)
    assert lr(plain, 399) == pytest.approx(5e-4)  # sqrt(100 / 400)
    for s in (0, 99, 399, 600):
        assert lr(cooled, s) == pytest.approx(lr(plain, s))
    assert lr(cooled, 800) == pytest.approx(lr(plain, 800) * 0.5)
    assert lr(cooled, 999) == pytest.approx(lr(plain, 999) / 400)
    assert lr(cooled, 1000) == 0.0


def _lineage(source: dict) -> list[dict]:
    """A model's ``source`` record and those of the models it was started from, oldest first."""
    chain = []
    while source:
        chain.insert(0, {k: v for k, v in source.items() if k != "init_from"})
        source = source.get("init_from")
    return chain


def test_embedded_stages_reproduce_the_shipped_models_lineage(tmp_path):
    """`train embedded NAME` runs every stage that made the shipped model, each from the one before:
    each stage's arguments, through the real parser, give the `source` record the shipped model keeps
    for that stage (fields a record lacks did not exist yet: their neutral value 0)."""
    from spes_jax.assets import EMBEDDED, model_dir
    from spes_jax.training.embedded import STAGES, stages
    from spes_jax.training.train import parser, source_record

    assert set(EMBEDDED) <= set(STAGES)
    for name in EMBEDDED:
        out = str(tmp_path / name)
        plan = stages(name, out)
        with open(f"{model_dir(name)}/config.json") as f:
            config = json.load(f)
        shipped = _lineage(config["source"])
        assert len(shipped) == len(plan), name
        previous = None
        for (stage, argv, marker), record in zip(plan, shipped):
            args = parser().parse_args(argv)
            assert args.init_from == previous
            ours = source_record(args)
            for key, value in record.items():
                if key == "mix":
                    for field, w in ours["mix"].items():
                        assert np.allclose(w, value.get(field, 0.0)), (name, stage, field)
                else:
                    assert ours[key] == value, (name, stage, key)
            previous = args.out
        # the last stage makes the model; an earlier one may train another task (st-robust's encoder: ASR)
        assert previous == out and args.task == EMBEDDED[name]
        assert args.max_seconds == config.get("data", {}).get("max_seconds")


def test_embedded_run_continues_at_the_first_unfinished_stage(tmp_path, capsys):
    """A stage is skipped only when its marker holds the same arguments and its model is still there."""
    from spes_jax.training.embedded import main, stages

    out = str(tmp_path / "st")
    (stage, argv, marker), (last, _, _) = stages("st", out)
    model = argv[argv.index("--out") + 1]
    main(["st", "--out", out, "--dry-run"])
    assert f"{stage}: to run" in capsys.readouterr().out

    os.makedirs(model)
    open(os.path.join(model, "config.json"), "w").write("{}")
    open(marker, "w").write(json.dumps({"argv": argv, "seconds": 1}))
    main(["st", "--out", out, "--dry-run"])
    printed = capsys.readouterr().out
    assert f"{stage}: done" in printed and f"{last}: to run" in printed
    open(marker, "w").write(json.dumps({"argv": argv[:-1] + ["elsewhere"], "seconds": 1}))
    main(["st", "--out", out, "--dry-run"])
    assert f"{stage}: to run" in capsys.readouterr().out
    # an OUT this command did not write is never replaced without --overwrite
    os.makedirs(out)
    with pytest.raises(SpesError, match="output exists"):
        main(["st", "--out", out])


def test_one_training_entry_point(tmp_path, capsys):
    """``python -m spes_jax.training COMMAND``: every recipe behind one command; bad input is one line."""
    from spes_jax.training.__main__ import main

    assert main([]) == 2 and "evaluate-sets" in capsys.readouterr().err
    assert main(["embedded", "st", "--out", str(tmp_path / "st"), "--dry-run"]) == 0
    assert "python -m spes_jax.training train --task asr" in capsys.readouterr().out
    os.makedirs(tmp_path / "taken")
    assert main(["embedded", "st", "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == f"error: output exists: {tmp_path / 'taken'} (pass --overwrite to replace it)\n"
