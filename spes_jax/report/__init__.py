"""Self-contained HTML explorer of SPES explanations: one offline page per run (``spes-jax report``).

``load_result`` (``spes_jax.results``) reads a result (a file, a folder of them or a run), ``build_report`` turns
explanations and their optional audio, word timings, references and metrics into the page, and
``write_report`` writes it atomically; ``page`` is the page of one explanation (shown inline by
notebooks). The page's HTML, CSS and JavaScript are package data files
(``template.html``, ``report.css``, ``report.js``) inlined at build time.
"""

from ..results import load_result
from ._build import Page, Utterance, build_report, page, resolve_audio, utterances, write_report

__all__ = ["Page", "Utterance", "build_report", "load_result", "page", "resolve_audio", "utterances", "write_report"]
