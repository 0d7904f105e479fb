"""Corpus runs in one process: inputs, shards, resume, merge, bad input (tiny model, few masks)."""

import copy
import errno
import json
import os
import re

import numpy as np
import pytest
from support import fairseq_zip_manifest, fixture_path, synthetic_features

from spes_jax import SPESConfig, SpesError, explain, load_explanations
from spes_jax.core import sweep
from spes_jax.corpus import (
    assign,
    explain_corpus,
    load_run,
    merge,
    read_corpus,
    read_zip_npy,
    rundir,
)
from spes_jax.corpus.sources import Utterance

CFG = SPESConfig.asr(n_masks=6, n_token_masks=4, batch_size=4, token_batch_size=4, seed=5)


@pytest.fixture(scope="module")
def arrays():
    """Raw fbank arrays: the two fixture utterances (102 and 248 frames) and a synthetic one of the
    first one's bucket."""
    out = {f"utt{i}": np.load(fixture_path("fbank", f"utt{i}_fbank80.npy")) for i in (0, 1)}
    out["syn0"] = synthetic_features(1.2, seed=1) * 3 + 5
    return out


@pytest.fixture(scope="module")
def zip_manifest(arrays, tmp_path_factory):
    texts = {k: " ".join(f"w{(len(k) * j + i) % 30}" for j in range(3 + i)) for i, k in enumerate(arrays)}
    return fairseq_zip_manifest(str(tmp_path_factory.mktemp("zipcorpus")), arrays, texts)


def test_fairseq_zip_manifest_reads_arrays_by_offset(arrays, zip_manifest):
    utts = read_corpus(zip_manifest)
    assert [u.id for u in utts] == list(arrays)
    for u in utts:
        np.testing.assert_array_equal(read_zip_npy(u.source), arrays[u.id])
        assert u.frames == arrays[u.id].shape[0]


def test_length_balanced_assignment_is_deterministic_and_balanced():
    utts = [Utterance(f"u{i}", "x", "", f) for i, f in enumerate([900, 100, 500, 480, 30, 700, 650, 20, 310])]
    parts = assign(utts, 3)
    assert parts == assign(list(reversed(utts)), 3)
    assert sorted(u.id for p in parts for u in p) == sorted(u.id for u in utts)
    loads = [sum(u.frames for u in p) for p in parts]
    assert max(loads) - min(loads) <= max(u.frames for u in utts)
    # round-robin over the sorted list would give loads 1630, 1200, 840: length balance does better
    assert max(loads) - min(loads) < 1630 - 840


def test_corpus_run_equals_single_explanations_and_merges(tiny_model, arrays, zip_manifest, tmp_path, capsys):
    run = tmp_path / "run"
    summary = explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", shard_size=2)
    assert summary.utterances == 3 and summary.skipped == 0
    index = json.loads((run / "proc-00000" / "index.json").read_text())
    assert [len(s["ids"]) for s in index["shards"]] == [2, 1]
    got = load_run(run)
    assert sorted(got) == sorted(arrays)
    references = {u.id: u.reference for u in read_corpus(zip_manifest)}
    ref = {uid: explain(tiny_model, [arr], CFG, ids=[uid], targets=[tiny_model.tokenizer.encode(references[uid])])[0]
           for uid, arr in arrays.items()}
    for uid, exp in got.items():
        np.testing.assert_allclose(exp.spectrogram_saliency, ref[uid].spectrogram_saliency, atol=1e-6)
        np.testing.assert_allclose(exp.prefix_saliency, ref[uid].prefix_saliency, atol=1e-6)
        assert exp.tokens == ref[uid].tokens and exp.meta["targets"] == ref[uid].meta["targets"] == "given"
    merged = tmp_path / "all.h5"
    assert merge(run, merged) == 3
    again = load_explanations(merged)
    assert sorted(again) == sorted(got)
    for uid in got:
        np.testing.assert_array_equal(again[uid].spectrogram_saliency, got[uid].spectrogram_saliency)
    # the commands that read explanations take the run directory itself
    from spes_jax.cli import main

    assert main(["--no-compile-cache", "plausibility", str(run), "--out", str(tmp_path / "p.json")]) == 0
    assert main(["--no-compile-cache", "evaluate", str(run), "--metrics", "size",
                 "--out-dir", str(tmp_path / "ev")]) == 0
    assert main(["--no-compile-cache", "merge", str(tmp_path), "--out", str(tmp_path / "x.h5")]) == 2
    before = merged.read_bytes()
    assert main(["merge", str(run), "--out", str(merged)]) == 2  # an existing output needs --overwrite
    assert merged.read_bytes() == before
    assert main(["merge", str(run), "--out", str(merged), "--overwrite"]) == 0
    assert main(["plot", str(run), "--id", sorted(got)[0], "--out", str(tmp_path / "m.png")]) == 0
    capsys.readouterr()
    assert main(["plot", str(merged), "--out", str(tmp_path / "first.png")]) == 0
    assert f"{merged} holds 3 utterances; plotting the first" in capsys.readouterr().err
    assert main(["aggregate", str(run), "--sentence", "--out", str(tmp_path / "s.h5")]) == 0
    assert sorted(load_explanations(tmp_path / "s.h5")) == sorted(got)
    # a file's attributes read back (numpy scalars) are written again
    assert main(["aggregate", str(merged), "--frequency", "--out", str(tmp_path / "f.h5")]) == 0
    from spes_jax.results import load_result, result_attrs

    exps, attrs = load_result(run)
    assert sorted(exps) == sorted(got) and attrs["targets"] == "reference"
    # the merged file carries the run's provenance
    scalars = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))}
    assert scalars and scalars.items() <= result_attrs(merged).items()


def test_float16_maps_halve_the_size_and_keep_three_digits(tiny_model, zip_manifest, tmp_path):
    runs = {}
    for dtype in ("float32", "float16"):
        runs[dtype] = tmp_path / dtype
        explain_corpus(tiny_model, zip_manifest, runs[dtype], CFG, targets="reference", map_dtype=dtype)
    size = {d: sum(f.stat().st_size for f in r.rglob("shard-*.h5")) for d, r in runs.items()}
    full, half = load_run(runs["float32"]), load_run(runs["float16"])
    for uid, exp in full.items():
        assert half[uid].spectrogram_saliency.dtype == np.float32  # read back as float32
        for a, b in ((exp.spectrogram_saliency, half[uid].spectrogram_saliency),
                     (exp.prefix_saliency, half[uid].prefix_saliency)):
            np.testing.assert_allclose(b, a, rtol=2.0 ** -11, atol=1e-7 * np.abs(a).max())
    print(f"\nshard bytes: float32 {size['float32']}, float16 {size['float16']}")
    assert size["float16"] < size["float32"]
    with pytest.raises(SpesError, match="map_dtype differs"):  # the stored precision is part of the run
        explain_corpus(tiny_model, zip_manifest, runs["float16"], CFG, targets="reference", resume=True)


@pytest.mark.slow
def test_compilations_equal_number_of_buckets(tiny_model, tmp_path):
    """A mixed-length corpus: compiled sweep steps == distinct (frames, tokens, segments) buckets."""
    from spes_jax._shapes import SEGMENT_BUCKET, TOKEN_BUCKET, bucket, round_up
    from spes_jax.core.segmentation import segment

    lengths = [0.3, 0.35, 0.5, 0.55, 0.9, 1.0, 0.32, 0.52]
    for i, s in enumerate(lengths):
        np.save(tmp_path / f"f{i}.npy", synthetic_features(s, seed=10 + i))
    keys = set()
    for i, s in enumerate(lengths):
        ids = tiny_model.tokenizer.encode("w1 w2 w3")
        feats = tiny_model.features(np.load(tmp_path / f"f{i}.npy"))
        seg = segment(feats, CFG)
        keys.add((bucket(feats.shape[0]), round_up(len(ids), TOKEN_BUCKET),
                  round_up(int(seg.n_segments.max()) + 1, SEGMENT_BUCKET)))
    # a folder of audio is the usual input; here, arrays through a zip keep the test free of fbank cost
    path = fairseq_zip_manifest(str(tmp_path), {f"f{i}": np.load(tmp_path / f"f{i}.npy")
                                                for i in range(len(lengths))},
                                {f"f{i}": "w1 w2 w3" for i in range(len(lengths))})
    cfg = CFG.replace(batch_size=2, token_batch_size=2)  # a fresh plan: its traces are this run's only
    before = dict(sweep.trace_counts())
    explain_corpus(tiny_model, path, tmp_path / "run", cfg, targets="reference")
    after = sweep.trace_counts()
    for name in ("init", "spectrogram_step", "prefix_step", "finalize"):
        assert after.get(name, 0) - before.get(name, 0) == len(keys), name
    assert 1 < len(keys) < len(lengths)


def test_resume_refuses_other_config_and_existing_dir(tiny_model, zip_manifest, tmp_path):
    run = tmp_path / "run"
    explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", limit=1)
    with pytest.raises(SpesError, match="already holds a run; pass --resume"):
        explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference")
    with pytest.raises(SpesError, match="cannot resume .*seed differs"):
        explain_corpus(tiny_model, zip_manifest, run, CFG.replace(seed=6), targets="reference", resume=True)
    with pytest.raises(SpesError, match="cannot resume .*config.n_masks differs"):
        explain_corpus(tiny_model, zip_manifest, run, CFG.replace(n_masks=9), targets="reference", resume=True)
    with pytest.raises(SpesError, match="targets differs"):
        explain_corpus(tiny_model, zip_manifest, run, CFG, targets="hypothesis", resume=True)
    # The same weights loaded with other options (a Whisper occlusion, say) make other maps.
    floor = copy.copy(tiny_model)
    floor.__class__ = type("Floor", (type(tiny_model),), {"options": property(lambda m: {"occlusion": "floor"})})
    with pytest.raises(SpesError, match="model_options differs"):
        explain_corpus(floor, zip_manifest, run, CFG, targets="reference", resume=True)
    # A run recorded before the options were: an FBK model's (none) are assumed.
    (run_file,) = run.glob("proc-*/run.json")
    identity = json.loads(run_file.read_text())
    del identity["model_options"]
    run_file.write_text(json.dumps(identity))
    explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", limit=1, resume=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(SpesError, match="not a corpus run directory"):
        explain_corpus(tiny_model, zip_manifest, other, CFG, targets="reference")


def test_full_disk_keeps_committed_shards_and_resume_completes(tiny_model, arrays, zip_manifest, tmp_path,
                                                               monkeypatch):
    run = tmp_path / "run"
    real = rundir.save_explanations
    calls = []

    def full_after_one(path, exps, attrs=None, map_dtype="float32"):
        calls.append(path)
        if len(calls) > 1:
            with open(path, "wb") as f:  # a partial write, then the disk is full
                f.write(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, exps, attrs, map_dtype)

    monkeypatch.setattr(rundir, "save_explanations", full_after_one)
    with pytest.raises(SpesError, match="cannot write a shard \\(No space left on device\\).*--resume"):
        explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", shard_size=1)
    assert len(load_run(run)) == 1
    monkeypatch.setattr(rundir, "save_explanations", real)
    summary = explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", shard_size=1, resume=True)
    assert summary.already_done == 1 and summary.utterances == 2
    assert sorted(load_run(run)) == sorted(arrays)
    assert sorted(os.listdir(run / "proc-00000")) == ["index.json", "run.json"] + [
        f"shard-0000{i}.h5" for i in range(3)] + ["targets.json"]  # the partial shard was removed


def test_unreadable_audio_is_skipped_and_logged(tiny_model, tmp_path):
    corpus = tmp_path / "audio"
    corpus.mkdir()
    import wave

    for name, n in (("good", 12000), ("tiny", 800)):  # 0.75 s and 0.05 s
        with wave.open(str(corpus / f"{name}.wav"), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.sin(np.arange(n) / 9.0) * 8000).astype("<i2").tobytes())
    (corpus / "broken.wav").write_bytes(b"RIFF\0\0\0\0not audio at all")
    summary = explain_corpus(tiny_model, corpus, tmp_path / "run", CFG.replace(n_token_masks=0),
                             targets="hypothesis")
    assert summary.utterances == 1 and summary.skipped == 2
    logged = {e["id"]: e["error"] for e in rundir.errors(str(tmp_path / "run"))}
    assert set(logged) == {"broken", "tiny"} and "too short" in logged["tiny"]
    assert list(load_run(tmp_path / "run")) == ["good"]


def test_commits_by_time_as_well_as_by_count(tiny_model, zip_manifest, tmp_path):
    """Once ``commit_every`` seconds have passed, what is done is committed whatever the shard size:
    here after every utterance, and decoded targets after every batch."""
    from spes_jax.corpus.runner import _Errors, _targets

    shards = {}
    for every in (1e-9, 60.0):
        run = tmp_path / f"every{every}"
        explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", shard_size=100, commit_every=every)
        with open(run / "proc-00000" / "index.json") as f:
            shards[every] = [len(s["ids"]) for s in json.load(f)["shards"]]
    assert shards == {1e-9: [1, 1, 1], 60.0: [3]}
    stored = []
    _targets(tiny_model, read_corpus(zip_manifest), "hypothesis", {}, _Errors(str(tmp_path)), 1,
             lambda decoded: stored.append(sorted(decoded)), 1e-9)
    assert stored[:3] == [["utt0"], ["utt0", "utt1"], ["syn0", "utt0", "utt1"]]


def test_progress_ends_full_when_inputs_are_skipped(tiny_model, tmp_path, capsys):
    import wave

    with wave.open(str(tmp_path / "good.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.sin(np.arange(12000) / 9.0) * 8000).astype("<i2").tobytes())
    (tmp_path / "broken.wav").write_bytes(b"RIFF\0\0\0\0not audio at all")
    (tmp_path / "m.tsv").write_text("id\taudio\treference\ngood\tgood.wav\tw1 w2\nbroken\tbroken.wav\tw3\n")
    summary = explain_corpus(tiny_model, tmp_path / "m.tsv", tmp_path / "run", CFG, targets="reference",
                             progress=True)
    assert summary.utterances == 1 and summary.skipped == 1
    assert re.findall(r"(\d+)/(\d+) \[", capsys.readouterr().err)[-1] == ("1", "1")


@pytest.mark.parametrize("tsv, message", [
    ("id\taudio\n", "needs an 'audio' column and one of"),
    ("id\taudio\treference\n", "empty manifest"),
    ("id\taudio\treference\na\tx.wav\thi\na\ty.wav\tho\n", "duplicate utterance id 'a'"),
    ("id\taudio\treference\na\tf.zip:10:99999\thi\n", "past the end"),
])
def test_bad_manifests(tmp_path, tsv, message):
    (tmp_path / "f.zip").write_bytes(b"PK" + b"\0" * 100)
    path = tmp_path / "m.tsv"
    path.write_text(tsv)
    with pytest.raises(SpesError, match=message):
        for u in read_corpus(path):
            read_zip_npy(u.source)


def test_corpus_files_carry_what_explain_files_carry(tiny_model, arrays, zip_manifest, tmp_path, capsys):
    """Shards and the merged file have the file attributes of 'spes-jax explain' and each utterance's
    record (token ids; for audio files path and sha256), so plot and report find the audio."""
    import h5py
    import soundfile as sf

    from spes_jax.cli import main
    from spes_jax.provenance import file_provenance, file_sha256

    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    sf.write(audio / "a.wav", 0.1 * rng.standard_normal(12000), 16000, subtype="PCM_16")
    (audio / "m.tsv").write_text("id\taudio\treference\na\ta.wav\tw1 w2\n")
    cfg = CFG.replace(n_token_masks=0)
    for source, run in ((audio / "m.tsv", tmp_path / "run"), (zip_manifest, tmp_path / "zrun")):
        explain_corpus(tiny_model, source, run, cfg, targets="reference")
        assert merge(run, tmp_path / f"{run.name}.h5") >= 1
    expected = file_provenance(tiny_model, cfg, "asr", targets="reference")
    shard = tmp_path / "run" / "proc-00000" / "shard-00000.h5"
    for path in (shard, tmp_path / "run.h5"):
        with h5py.File(path) as f:
            assert {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()} == expected
            g = f["a"]
            assert g.attrs["audio"] == str(audio / "a.wav") and g.attrs["audio_sha256"] == file_sha256(audio / "a.wav")
            tokens = [t.decode() for t in g["tokens"][()]]
            assert list(g.attrs["token_ids"]) == [tiny_model.dictionary.index(t) for t in tokens]
    with h5py.File(tmp_path / "zrun.h5") as f:  # features from a zip: token ids, no audio to record
        assert f.attrs["model_sha256"] == expected["model_sha256"]
        assert all("token_ids" in f[u].attrs and "audio" not in f[u].attrs for u in f)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run.h5"), "--out", str(tmp_path / "r.html")]) == 0
    assert '"source":"1 utterance, 1 with audio"' in (tmp_path / "r.html").read_text()
    assert main(["plot", str(tmp_path / "run.h5"), "--out", str(tmp_path / "p.png")]) == 0
    lines = capsys.readouterr().err.splitlines()  # no "recorded audio is not there" warning
    assert len(lines) == 2 and lines[1] == f"wrote {tmp_path / 'p.png'}"


def test_ctrl_c_commits_the_utterances_already_explained(tiny_model, arrays, zip_manifest, tmp_path, monkeypatch):
    """Ctrl-C during the second utterance's sweep keeps the first (not yet due for a commit), and
    --resume explains only the rest."""
    from spes_jax.corpus import runner

    real = runner.sweeps

    def interrupted_after_one(*args, **kwargs):
        for k, swept in enumerate(real(*args, **kwargs)):
            if k == 1:
                raise KeyboardInterrupt
            yield swept

    run = tmp_path / "run"
    monkeypatch.setattr(runner, "sweeps", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", shard_size=100, commit_every=3600)
    assert len(load_run(run)) == 1
    monkeypatch.setattr(runner, "sweeps", real)
    summary = explain_corpus(tiny_model, zip_manifest, run, CFG, targets="reference", resume=True)
    assert summary.already_done == 1 and sorted(load_run(run)) == sorted(arrays)
