import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from spes_jax import SpesError, audio
from spes_jax.errors import SpesNote
from support import fixture_path


@pytest.mark.parametrize("utt", ["utt0", "utt1"])
def test_read_audio_matches_reference_reader(utt):
    wav = audio.read_audio(fixture_path("fbank", f"{utt}_16k.wav"))
    ref = np.load(fixture_path("fbank", f"{utt}_waveform_float32.npy")).ravel()
    np.testing.assert_array_equal(wav, ref)


@pytest.mark.parametrize("utt", ["utt0", "utt1"])
def test_fbank_matches_torchaudio_kaldi(utt):
    feats = audio.fbank(audio.read_audio(fixture_path("fbank", f"{utt}_16k.wav")))
    ref = np.load(fixture_path("fbank", f"{utt}_fbank80.npy"))
    assert feats.shape == ref.shape
    err = np.abs(feats - ref)
    # The reference is float32 (torch FFT); a handful of low-energy cells in the lowest mel bins are
    # float32-noise dominated there (a float32 FFT moves them by up to 3e-3 too, see docs/port.md).
    assert np.mean(err <= 1e-3) >= 0.999
    assert err.max() <= 1e-2
    assert np.median(err) <= 1e-5


@pytest.mark.parametrize("utt", ["utt0", "utt1"])
def test_model_input_matches_reference_within_1e3(utt):
    feats = audio.load_features(fixture_path("fbank", f"{utt}_16k.wav"))
    ref = np.load(fixture_path("fbank", f"{utt}_fbank80_utterance_cmvn.npy"))
    assert np.abs(feats - ref).max() <= 1e-3


@pytest.mark.parametrize("utt", ["utt0", "utt1"])
def test_utterance_cmvn_matches_fairseq(utt):
    raw = np.load(fixture_path("fbank", f"{utt}_fbank80.npy"))
    ref = np.load(fixture_path("fbank", f"{utt}_fbank80_utterance_cmvn.npy"))
    np.testing.assert_allclose(audio.utterance_cmvn(raw), ref, atol=1e-6)


def test_fbank_frame_count_and_sine_peak():
    t = np.arange(16000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 1000 * t)
    feats = audio.fbank(x)
    assert feats.shape == (1 + (16000 - 400) // 160, 80)
    centers = 700 * (np.exp((np.linspace(audio._mel(20.0), audio._mel(8000.0), 82)[1:-1]) / 1127) - 1)
    assert abs(centers[feats.mean(0).argmax()] - 1000) < 60


def _speech():
    """A bundled 16 kHz utterance (5.3 s of synthetic speech)."""
    from spes_jax.assets import samples

    return audio.read_audio(samples()["test00001"])


# (soundfile format, subtype, quantisation step of the format)
WAV_VARIANTS = [("WAV", "PCM_U8", 2 ** -7), ("WAV", "PCM_16", 2 ** -15), ("WAVEX", "PCM_16", 2 ** -15),
                ("WAV", "PCM_24", 2 ** -23), ("WAV", "PCM_32", 2 ** -31), ("WAV", "FLOAT", 0), ("WAV", "DOUBLE", 0)]


@pytest.mark.parametrize("fmt,subtype,step", WAV_VARIANTS)
def test_reads_every_wav_sample_format(tmp_path, fmt, subtype, step):
    x = _speech()
    path = tmp_path / f"{fmt}_{subtype}.wav"
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    y = audio.read_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= step + 1e-7


def test_extensible_header_reads_like_plain_pcm(tmp_path):
    x = _speech()
    sf.write(tmp_path / "plain.wav", x, 16000, format="WAV", subtype="PCM_16")
    sf.write(tmp_path / "ext.wav", x, 16000, format="WAVEX", subtype="PCM_16")
    assert (tmp_path / "ext.wav").read_bytes()[20:22] == b"\xfe\xff"  # format tag 65534
    np.testing.assert_array_equal(audio.read_audio(tmp_path / "ext.wav"), audio.read_audio(tmp_path / "plain.wav"))


def test_flac_round_trip_gives_the_wavs_features(tmp_path):
    x = _speech()
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    wav, flac = audio.load_features(tmp_path / "a.wav"), audio.load_features(tmp_path / "a.flac")
    assert np.abs(flac - wav).max() <= 1e-3  # lossless: in fact identical
    np.testing.assert_array_equal(flac, wav)


@pytest.mark.parametrize("fmt,subtype,ext", [("MP3", "MPEG_LAYER_III", "mp3"), ("OGG", "VORBIS", "ogg")])
def test_lossy_round_trip(tmp_path, fmt, subtype, ext):
    """MP3 and OGG/Vorbis decode through libsndfile with no delay or gain error. A lossy codec changes
    the signal, so the features are compared with a decoded copy stored as WAV (the reader's own
    contribution, within 1e-3) and with the original (the codec's, a small mean error)."""
    x = _speech()
    coded = tmp_path / f"a.{ext}"
    sf.write(coded, x, 16000, format=fmt, subtype=subtype, compression_level=0.0)
    y = audio.read_audio(coded)
    assert y.shape == x.shape  # gapless: the encoder's delay and padding are removed
    snr = 10 * np.log10(np.sum(x ** 2) / np.sum((y - x) ** 2))
    assert snr > 15, snr  # aligned at lag 0 (a misaligned decode gives about 0 dB)
    sf.write(tmp_path / "decoded.wav", y, 16000, subtype="FLOAT")
    feats = audio.load_features(coded)
    assert np.abs(feats - audio.load_features(tmp_path / "decoded.wav")).max() <= 1e-3
    assert np.abs(feats - audio.utterance_cmvn(audio.fbank(x))).mean() < 0.1


def test_resampling_and_downmix_with_a_note(tmp_path):
    x = _speech()
    x44 = resample_poly(x.astype(np.float64), 441, 160).astype(np.float32)
    sf.write(tmp_path / "a44.wav", np.stack([x44, x44], 1), 44100, subtype="FLOAT")
    with pytest.warns(SpesNote) as notes:
        y = audio.read_audio(tmp_path / "a44.wav")
    assert [str(n.message) for n in notes] == [f"{tmp_path / 'a44.wav'}: 2 channels mixed down to mono",
                                               f"{tmp_path / 'a44.wav'}: resampled from 44100 Hz to 16000 Hz"]
    assert abs(len(y) - len(x)) <= 1  # resample_poly rounds the length up
    feats, ref = audio.utterance_cmvn(audio.fbank(y[: len(x)])), audio.utterance_cmvn(audio.fbank(x))
    assert np.abs(feats - ref).mean() < 0.01  # polyphase up and down again: near transparent
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "tone8k.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), 8000, subtype="PCM_16")
    with pytest.warns(SpesNote, match="from 8000 Hz"):
        tone = audio.read_audio(tmp_path / "tone8k.wav")
    spectrum = np.abs(np.fft.rfft(tone))
    assert tone.shape == (16000,) and abs(np.argmax(spectrum) * 16000 / len(tone) - 1000) <= 1


def test_bad_audio_files_name_the_file(tmp_path):
    noise = (np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32)
    sf.write(tmp_path / "full.wav", noise, 16000, subtype="PCM_16")
    whole = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "header_only.wav").write_bytes(whole[:30])
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "no_samples.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    (tmp_path / "text.wav").write_text("not audio")
    (tmp_path / "folder.wav").mkdir()
    cases = [("truncated.wav", "truncated WAV file: the header announces 16000 bytes"),
             ("header_only.wav", "not a readable audio file"), ("empty.wav", "empty file"),
             ("no_samples.wav", "no audio samples"),
             ("text.wav", "not a readable audio file"), ("folder.wav", "is a directory"),
             ("missing.wav", "not found")]
    for name, msg in cases:
        with pytest.raises(SpesError, match=msg) as e:
            audio.load_features(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


def test_too_short_input_is_refused_by_the_model_once(tiny_model, tmp_path):
    """One rule for every command: fewer than 16 frames (0.16 s) is refused when the model reads the
    input, whatever reads it; the filterbank itself just has no frame for less than one window."""
    assert audio.fbank(np.zeros(100)).shape == (0, 80)
    sf.write(tmp_path / "one_sample.wav", np.zeros(1, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(SpesError, match=r"one_sample.wav: audio too short: it gives 0 frames of 10 ms; the model needs "
                                        r"at least 16 \(about 0.17 s of audio\)"):
        tiny_model.features(str(tmp_path / "one_sample.wav"))
    noise = np.random.default_rng(0).standard_normal(2800).astype(np.float32) * 0.1  # 16 frames exactly
    assert tiny_model.features(noise).shape == (16, 80)
    with pytest.raises(SpesError, match=r"audio too short: it gives 15 frames"):
        tiny_model.features(noise[:-1])
    with pytest.raises(SpesError, match=r"audio too short: it gives 15 frames"):
        tiny_model.transcribe(np.zeros((15, 80), np.float32))


def test_nan_inputs_are_rejected():
    bad = np.zeros((50, 80), np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(SpesError, match="NaN"):
        audio.load_features(bad)
