"""The one exception type the library raises for bad input.

The command line turns it into a single ``spes-jax: error: ...`` line and a non-zero exit.
"""


class SpesError(Exception):
    """Bad user input: a missing or unreadable file, a wrong format, an unsupported model."""
