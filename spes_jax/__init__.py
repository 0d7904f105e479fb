"""spes-jax: SPES explanations for speech-to-text models, in JAX/Flax."""

from .config import SPESConfig
from .contrastive import explain_contrastive
from .corpus import explain_corpus
from .decoding import SearchConfig, beam_search, greedy_search
from .encoder_saliency import EncoderSaliency, explain_encoder, load_encoder_saliency, save_encoder_saliency
from .errors import SpesError
from .explainer import explain
from .explanation import Explanation, load_explanations, save_explanations
from .speech_model import FairseqModel, Hypothesis, SpeechToTextModel, load_model

__version__ = "0.1.0"

__all__ = ["explain", "explain_contrastive", "explain_corpus", "explain_encoder", "EncoderSaliency", "load_encoder_saliency",
           "save_encoder_saliency", "SPESConfig",
           "Explanation", "load_explanations", "save_explanations", "SearchConfig", "beam_search", "greedy_search",
           "SpesError", "Hypothesis", "SpeechToTextModel", "FairseqModel", "load_model", "__version__"]
