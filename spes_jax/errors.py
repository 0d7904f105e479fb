"""The one exception type the library raises for bad input, its warnings, and how messages count.

The command line turns a ``SpesError`` into a single ``spes-jax: error: ...`` line and a non-zero
exit, and each ``SpesWarning`` into one ``spes-jax: warning: ...`` (``note: ...``) line.
"""


class SpesError(Exception):
    """Bad user input: a missing or unreadable file, a wrong format, an unsupported model."""


class SpesWarning(UserWarning):
    """Input the library accepts but the user should know about (e.g. silence, very long audio)."""


class SpesNote(SpesWarning):
    """A conversion the library made on the user's behalf (resampling, down-mixing)."""


def count(n: int, noun: str) -> str:
    """"1 utterance", "2 utterances": a number with its noun for messages (regular plurals only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
