"""Whisper's log-mel front end against the transformers reference features of the fixture clips."""

import json

import numpy as np
import pytest
import soundfile as sf

from spes_jax.errors import SpesError
from spes_jax.whisper import FeatureSettings, log_mel, mel_filters, silence_floor, utterance_frames
from support import whisper_fixture_path

CLIPS = ("goforward", "librivox_0880", "librivox_0920", "cards_005")


def read_clip(clip: str) -> np.ndarray:
    """The clip as the reference read it: int16 samples / 32768."""
    samples, rate = sf.read(whisper_fixture_path("audio", f"{clip}.wav"), dtype="int16")
    assert rate == 16000
    return (samples / 32768).astype(np.float32)


def test_mel_filters_match_the_feature_extractor():
    want = np.load(whisper_fixture_path("reference", "mel_filters_80.npz"))["mel_filters"]
    got = mel_filters(80)
    assert got.shape == want.shape == (201, 80) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_mel_filters_128():
    """large-v3's bank: 128 unit-area triangles (Slaney normalisation) with rising centres."""
    bank = mel_filters(128)
    assert bank.shape == (201, 128) and (bank >= 0).all()
    centres = bank.argmax(axis=0)
    assert (np.diff(centres) >= 0).all() and centres[-1] > 190
    # Wide (high) filters are sampled finely enough that their area, sum * 40 Hz per bin, is about 1
    # (each to within the sampling of a few-bin triangle; unnormalised ones would have areas of 3 to 13).
    areas = bank[:, 64:].sum(axis=0) * 40.0
    assert abs(areas.mean() - 1.0) < 0.02 and np.abs(areas - 1.0).max() < 0.15


@pytest.mark.parametrize("clip", CLIPS)
def test_log_mel_matches_transformers(clip):
    with open(whisper_fixture_path("reference", "index.json")) as f:
        numpy_vs_torch = json.load(f)["clips"][clip]["max_abs_features_torch_vs_numpy_path"]
    want = np.load(whisper_fixture_path("reference", f"{clip}.npz"))["input_features"].T
    got = log_mel(read_clip(clip))
    assert got.shape == (3000, 80) and got.dtype == np.float32
    diff = float(np.abs(got - want).max())
    # As close to transformers' torch path as its own numpy path is (measured: 6.6e-6 .. 2.1e-5).
    assert diff <= numpy_vs_torch * 1.05 + 1e-6, diff


@pytest.mark.parametrize("clip", CLIPS)
def test_frames_after_the_utterance_are_the_floor(clip):
    wave = read_clip(clip)
    want = np.load(whisper_fixture_path("reference", f"{clip}.npz"))["input_features"].T
    n = utterance_frames(wave.size)
    features = log_mel(wave)
    assert (features[n:] == silence_floor(features)).all()
    assert (want[n:] == silence_floor(want)).all()  # the same value in transformers' own features


@pytest.mark.parametrize("n", [1, 121, 161, 280, 16000, 44580, 479641, 480000, 500000])
def test_utterance_frames_is_tight(n):
    """Frame utterance_frames(n) - 1 still sees noise; every later frame is exactly the floor.

    (For n = 122 the last frame sees the audio through the window's second coefficient only, 6e-5: its
    energy lies more than 8 decades below the maximum, so it is clamped to the floor as well.)
    """
    wave = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    features = log_mel(wave)
    k = utterance_frames(n)
    assert 0 < k <= 3000
    floor = silence_floor(features)
    assert (features[k:] == floor).all()
    assert (features[k - 1] != floor).any()
    assert floor == max(features.max() - np.float32(2), np.float32(-1.5))


def test_silence_is_the_lowest_floor():
    features = log_mel(np.zeros(16000, np.float32))
    assert (features == np.float32(-1.5)).all() and silence_floor(features) == np.float32(-1.5)
    assert utterance_frames(0) == 0


def test_settings_from_dir(tmp_path):
    assert FeatureSettings.from_dir(whisper_fixture_path("model", "whisper-tiny.en")) == FeatureSettings()
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128, "chunk_length": 10}))
    settings = FeatureSettings.from_dir(tmp_path)
    assert (settings.n_mels, settings.n_samples, settings.n_frames) == (128, 160000, 1000)
    assert settings.log_mel(np.zeros(100, np.float32)).shape == (1000, 128)
    assert settings.utterance_frames(10 ** 6) == 1000
    assert FeatureSettings.from_dir(tmp_path / "absent", n_mels=128).n_mels == 128
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(SpesError):
        FeatureSettings.from_dir(tmp_path)
    with pytest.raises(SpesError):
        log_mel(np.zeros((2, 100), np.float32))
