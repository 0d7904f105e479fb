"""fairseq ``Dictionary`` and SentencePiece: text <-> pieces <-> ids, as FBK-fairseq does it."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .errors import SpesError

BOS, PAD, EOS, UNK = 0, 1, 2, 3
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
WORD_START = "\u2581"  # SentencePiece's word-start marker


def pieces_text(pieces) -> str:
    """SentencePiece pieces -> the text they spell (each word-start marker becomes a space)."""
    return "".join(pieces).replace(WORD_START, " ").strip()


def token_words(pieces: list[str]) -> list[int]:
    """Word index of every piece, the grouping every view shares (figures, the report, plausibility,
    word aggregation): a piece starting with U+2581 begins a word (a lone U+2581 begins the word its
    next piece spells), a piece without it continues the open word, and punctuation between two
    pieces of one word ("ill" "-" "dis" "posed", "don" "'" "t") belongs to it; -1 for </s> and other
    punctuation-only pieces. (``aggregation.by_words(grouping="fbk")`` has the rule of FBK's SPES
    code: docs/aggregation.md.)"""
    def punctuation(p: str) -> bool:
        text = p.replace(WORD_START, "")
        return bool(text) and not any(ch.isalnum() for ch in text)

    out, word = [], -1
    for k, p in enumerate(pieces):
        if p == "</s>" or punctuation(p):
            following = pieces[k + 1] if k + 1 < len(pieces) else "</s>"
            inside = (word >= 0 and out[-1] == word and not p.startswith(WORD_START)
                      and not following.startswith(WORD_START) and following != "</s>" and not punctuation(following))
            out.append(word if p != "</s>" and inside else -1)
            continue
        if p.startswith(WORD_START) or word < 0 or out[-1] != word:  # no word resumes after punctuation
            word += 1
        out.append(word)
    return out


def word_groups(pieces: list[str]) -> list[list[int]]:
    """The token indices of each word, in order: pieces grouped by ``token_words`` (a piece starting
    with U+2581 begins a word, punctuation inside a word belongs to it; </s> and other
    punctuation-only pieces are groups of their own). Every group is a contiguous run of indices."""
    groups: list[list[int]] = []
    words: dict[int, list[int]] = {}
    for k, w in enumerate(token_words(pieces)):
        if w < 0:
            groups.append([k])
        elif w in words:
            words[w].append(k)
        else:
            words[w] = [k]
            groups.append(words[w])
    return groups


def word_text(pieces: Sequence[str], group: list[int]) -> str:
    """The text of one group of ``word_groups``: its pieces joined, without the word-start marker."""
    return "".join(pieces[k] for k in group).replace(WORD_START, "")


class Dictionary:
    """A fairseq target dictionary: ids 0-3 are <s>, <pad>, </s>, <unk>; then the file's symbols.
    ``index`` maps an unknown symbol to ``unk``."""

    unk = UNK

    def __init__(self, symbols):
        self.symbols = tuple(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dictionary":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise SpesError(f"dictionary not found: {path}")
        symbols = list(_SPECIALS)
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                fields = line.rsplit(" ", 1)
                word = fields[0]
                if word.endswith(" #fairseq:overwrite"):
                    word = word[: -len(" #fairseq:overwrite")]
                elif len(fields) != 2 or word in symbols:
                    raise SpesError(f"{path}:{n}: not a fairseq dictionary line: {line!r}")
                symbols.append(word)
        return cls(symbols)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for s in self.symbols[len(_SPECIALS):]:
                f.write(f"{s} 1\n")

    def __len__(self) -> int:
        return len(self.symbols)

    def index(self, symbol: str) -> int:
        return self._ids.get(symbol, UNK)

    def pieces(self, ids) -> list[str]:
        return [self.symbols[int(i)] for i in ids]


class Tokenizer:
    """SentencePiece model + fairseq dictionary."""

    def __init__(self, dictionary: Dictionary, spm_path: str | os.PathLike | None):
        import sentencepiece as spm

        self.dictionary = dictionary
        self._sp = None
        if spm_path is not None:
            if not os.path.isfile(spm_path):
                raise SpesError(f"SentencePiece model not found: {spm_path}")
            self._sp = spm.SentencePieceProcessor(model_file=os.fspath(spm_path))

    def split(self, text: str) -> list[str]:
        """Text -> pieces (SentencePiece, or whitespace words without a SentencePiece model)."""
        return text.split() if self._sp is None else self._sp.encode(text, out_type=str)

    def encode(self, text: str) -> list[int]:
        """Text -> ids ending with </s> (fairseq ``encode_line(append_eos=True)``)."""
        return [self.dictionary.index(p) for p in self.split(text)] + [EOS]

    def decode(self, ids) -> str:
        """Ids -> text; specials are dropped, SentencePiece word boundaries become spaces."""
        pieces = [p for i, p in zip(ids, self.dictionary.pieces(ids)) if int(i) not in (BOS, PAD, EOS)]
        if self._sp is None:
            return " ".join(pieces)
        return pieces_text(pieces)
