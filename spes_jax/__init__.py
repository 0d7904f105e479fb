"""spes-jax: SPES explanations for speech-to-text models, in JAX/Flax."""

from .decoding import SearchConfig, beam_search, greedy_search
from .errors import SpesError
from .pipeline import Hypothesis, SpeechToTextModel, load_model

__version__ = "0.1.0"

__all__ = ["SearchConfig", "beam_search", "greedy_search", "SpesError", "Hypothesis", "SpeechToTextModel",
           "load_model", "__version__"]
