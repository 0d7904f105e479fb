"""Whisper's tokenizer, read from a Hugging Face ``tokenizer.json`` without the ``tokenizers`` library.

Whisper uses GPT-2's byte-level BPE: text is split by GPT-2's pre-tokenizer pattern, each piece's
UTF-8 bytes are spelled with one printable character per byte, and the BPE merges (lowest rank first)
join those characters into vocabulary tokens. Control tokens (``<|endoftext|>``,
``<|startoftranscript|>``, languages, tasks, timestamps) are the file's added tokens.

The pre-tokenizer pattern uses ``\\p{L}`` / ``\\p{N}``, which Python's ``re`` lacks; ``_pretokenize``
applies the same pattern by hand from ``unicodedata`` categories (the tests compare it with the
``regex`` module on adversarial text).
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from typing import Iterable, Sequence

from .._io import read_json
from ..errors import SpesError

# Unicode's White_Space property (what ``\s`` means in the pre-tokenizer pattern).
_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                        "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
_LANGUAGE = re.compile(r"<\|([a-z]{2,3})\|>")
_TASKS = ("transcribe", "translate")


def _byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 byte values: printable Latin-1 bytes stand for themselves,
    the others (controls, space, ...) take the code points from 256 upwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spare = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(spare)) for b in range(256)]


_BYTE_CHARS = _byte_alphabet()
_CHAR_BYTES = {c: b for b, c in enumerate(_BYTE_CHARS)}


def _kind(c: str) -> str:
    """' ' whitespace, 'L' letter, 'N' number, 'P' anything else (the pattern's character classes)."""
    if c in _WHITESPACE:
        return " "
    major = unicodedata.category(c)[0]
    return major if major in "LN" else "P"


def _pretokenize(text: str) -> list[str]:
    """Splits text like GPT-2's pattern
    ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``."""
    kinds = [_kind(c) for c in text]
    n, i, pieces = len(text), 0, []
    while i < n:
        if text[i] == "'":
            suffix = next((s for s in _CONTRACTIONS if text.startswith(s, i + 1)), None)
            if suffix is not None:
                pieces.append(text[i:i + 1 + len(suffix)])
                i += 1 + len(suffix)
                continue
        # One plain space (U+0020 only) may prefix a run of letters, of digits or of other symbols.
        start = i + 1 if text[i] == " " and i + 1 < n and kinds[i + 1] != " " else i
        end = start
        while end < n and kinds[end] == kinds[start]:
            end += 1
        if kinds[start] == " " and end < n and end - start > 1:
            end -= 1  # \s+(?!\S): a run before a non-space leaves its last character to the next piece
        pieces.append(text[i:end])
        i = end
    return pieces


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Applies the merges to one pre-token (in byte spelling): always the lowest-ranked adjacent pair."""
    parts = list(word)
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, len(ranks)))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings a Whisper directory stores.

    Read from ``generation_config.json``, else ``config.json`` (older Hugging Face directories keep
    ``suppress_tokens`` there; CTranslate2 / faster-whisper directories call them ``suppress_ids`` and
    ``suppress_ids_begin``). ``is_multilingual`` is None when the files do not say.
    """

    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    alignment_heads: tuple[tuple[int, int], ...] = ()
    is_multilingual: bool | None = None

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "GenerationSettings":
        path = os.fspath(path)
        for name in ("generation_config.json", "config.json"):
            file = os.path.join(path, name)
            if os.path.isfile(file):
                return cls.from_dict(read_json(file), file)
        return cls()

    @classmethod
    def from_dict(cls, cfg: dict, source: str = "generation config") -> "GenerationSettings":
        def ids(*keys: str) -> tuple[int, ...]:
            value = next((cfg[k] for k in keys if cfg.get(k) is not None), ())
            try:
                return tuple(int(i) for i in value)
            except (TypeError, ValueError):
                raise SpesError(f"{source}: {keys[0]} must be a list of token ids, got {value!r}") from None

        try:
            heads = tuple((int(a), int(b)) for a, b in cfg.get("alignment_heads") or ())
        except (TypeError, ValueError):
            raise SpesError(f"{source}: alignment_heads must be [layer, head] pairs") from None
        multilingual = cfg.get("is_multilingual")
        return cls(suppress_tokens=ids("suppress_tokens", "suppress_ids"),
                   begin_suppress_tokens=ids("begin_suppress_tokens", "suppress_ids_begin"),
                   alignment_heads=heads, is_multilingual=None if multilingual is None else bool(multilingual))


class WhisperTokenizer:
    """Byte-level BPE plus Whisper's control tokens.

    Attributes (token ids): ``eot``, ``sot``, ``sot_prev``, ``translate``, ``transcribe``,
    ``no_timestamps``, ``no_speech`` (``<|nospeech|>``, ``<|nocaptions|>`` in older vocabularies; None
    if absent), ``timestamp_begin`` (``<|0.00|>``), ``languages`` (code -> id, e.g. "en");
    ``multilingual`` (whether the model takes language and task tokens); ``vocab_size``.
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], added: dict[int, str],
                 special: Iterable[int], multilingual: bool | None = None):
        self._tokens: dict[int, str] = {i: t for t, i in vocab.items()}
        self._tokens.update(added)
        self._ids = {t: i for i, t in self._tokens.items()}
        self._vocab = dict(vocab)
        self._ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self._added = frozenset(added)
        self._special = frozenset(special)
        self._cache: dict[str, list[int]] = {}
        self.vocab_size = max(self._tokens) + 1
        self.eot = self._control("<|endoftext|>")
        self.sot = self._control("<|startoftranscript|>")
        self.sot_prev = self._control("<|startofprev|>")
        self.translate = self._control("<|translate|>")
        self.transcribe = self._control("<|transcribe|>")
        self.no_timestamps = self._control("<|notimestamps|>")
        self.no_speech = next((self._ids[t] for t in ("<|nospeech|>", "<|nocaptions|>") if t in self._ids), None)
        self.timestamp_begin = self._ids.get("<|0.00|>", self.no_timestamps + 1)
        self.languages = {m.group(1): i for i, t in sorted(self._tokens.items())
                          if i in self._special and (m := _LANGUAGE.fullmatch(t))}
        # English-only Whisper keeps GPT-2's vocabulary (<|endoftext|> = 50256, its last entry); the
        # multilingual vocabulary has one more text token.
        self.multilingual = self.eot > 50256 if multilingual is None else bool(multilingual)

    def _control(self, token: str) -> int:
        if token not in self._ids or self._ids[token] not in self._added:
            raise SpesError(f"not a Whisper tokenizer: the control token {token} is missing")
        return self._ids[token]

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "WhisperTokenizer":
        """Reads ``tokenizer.json`` (and the ``is_multilingual`` flag of the generation config) in ``path``."""
        path = os.fspath(path)
        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            raise SpesError(f"{path}: no tokenizer.json (a Hugging Face or faster-whisper Whisper directory has one)")
        data = read_json(file)
        model = data.get("model") or {}
        if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise SpesError(f"{file}: not a byte-level BPE tokenizer (model type {model.get('type')!r})")
        # Merges are "a b" strings in older files, [a, b] pairs in newer ones.
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", ())]
        try:
            added = {int(t["id"]): str(t["content"]) for t in data.get("added_tokens", ())}
            special = [int(t["id"]) for t in data.get("added_tokens", ()) if t.get("special")]
            vocab = {str(t): int(i) for t, i in model["vocab"].items()}
        except (KeyError, TypeError, ValueError):
            raise SpesError(f"{file}: malformed vocabulary or added_tokens") from None
        if any(len(m) != 2 for m in merges):
            raise SpesError(f"{file}: malformed merges")
        return cls(vocab, merges, added, special, GenerationSettings.from_dir(path).is_multilingual)

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text (no control tokens; ``<|...|>`` in the text is spelled as text)."""
        ids: list[int] = []
        for piece in _pretokenize(text):
            if piece not in self._cache:
                spelled = "".join(_BYTE_CHARS[b] for b in piece.encode("utf-8"))
                try:
                    self._cache[piece] = [self._vocab[t] for t in _bpe(spelled, self._ranks)]
                except KeyError as e:
                    raise SpesError(f"tokenizer.json has no token {e.args[0]!r} "
                                    "(incomplete byte-level vocabulary)") from None
            ids.extend(self._cache[piece])
        return ids

    def _check(self, ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if i not in self._tokens]
        if bad:
            raise SpesError(f"token id {bad[0]} is not in the vocabulary (size {self.vocab_size})")
        return ids

    def _text(self, token_id: int) -> str:
        if token_id in self._added:
            return self._tokens[token_id]
        return bytes(_CHAR_BYTES[c] for c in self._tokens[token_id]).decode("utf-8", errors="replace")

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """Each token's own text (e.g. " Go"; bytes of a split character become U+FFFD; control tokens
        their name, e.g. "<|endoftext|>")."""
        return [self._text(i) for i in self._check(ids)]

    def word_starts(self, ids: Iterable[int]) -> list[bool]:
        """Whether each token starts a word: the first token, and every token whose text starts with a space."""
        return [k == 0 or p.startswith(" ") for k, p in enumerate(self.pieces(ids))]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """The text of a token sequence (the leading space kept).

        ``skip_special`` behaves like Hugging Face's ``skip_special_tokens=True``: a previous-text prompt
        (``<|startofprev|>`` ... up to ``<|startoftranscript|>``) and all control and timestamp tokens are
        dropped. Otherwise control tokens appear by name.
        """
        ids = self._check(ids)
        if skip_special:
            if ids and ids[0] == self.sot_prev:
                ids = ids[ids.index(self.sot):] if self.sot in ids else []
            ids = [i for i in ids if i not in self._added]
        out, run = [], bytearray()
        for i in ids:
            if i in self._added:
                out.append(run.decode("utf-8", errors="replace") + self._tokens[i])
                run = bytearray()
            else:
                run.extend(_CHAR_BYTES[c] for c in self._tokens[i])
        return "".join(out) + run.decode("utf-8", errors="replace")

    def prompt(self, language: str | None = None, task: str = "transcribe",
               multilingual: bool | None = None) -> tuple[int, ...]:
        """The forced decoder prompt: ``<|startoftranscript|>`` [language task] ``<|notimestamps|>``.

        English-only models take no language or task token (tiny.en: (50257, 50362)); only English
        transcription is possible. Multilingual models need a language code ("en", "de", ...).
        """
        multilingual = self.multilingual if multilingual is None else multilingual
        if task not in _TASKS:
            raise SpesError(f"unknown Whisper task {task!r}; choose 'transcribe' or 'translate'")
        code = None if language is None else language.strip().lower().removeprefix("<|").removesuffix("|>")
        if not multilingual:
            if task == "translate":
                raise SpesError("this Whisper model is English-only: it cannot translate (task 'transcribe' only)")
            if code not in (None, "en"):
                raise SpesError(f"this Whisper model is English-only: language {language!r} is not available")
            return (self.sot, self.no_timestamps)
        if code is None:
            raise SpesError("this Whisper model is multilingual: give the language of the audio "
                            f"(a code such as 'en'; one of {', '.join(self.languages)})")
        if code not in self.languages:
            raise SpesError(f"unknown Whisper language {language!r}; codes: {', '.join(self.languages)}")
        task_id = self.transcribe if task == "transcribe" else self.translate
        return (self.sot, self.languages[code], task_id, self.no_timestamps)
