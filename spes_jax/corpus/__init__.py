"""Corpus-scale explanation: streamed, resumable, sharded runs (``explain_corpus``), run directories
(``load_run``, ``merge``) and corpus inputs (``read_corpus``). See docs/corpus.md."""

from .rundir import load_run, merge
from .runner import Summary, assign, explain_corpus
from .sources import Utterance, read_corpus, read_zip_npy

__all__ = [
           "Summary",
           "Utterance",
           "assign",
           "explain_corpus",
           "load_run",
           "merge",
           "read_corpus",
           "read_zip_npy",
]
