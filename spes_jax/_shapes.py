"""Padding buckets: inputs are padded to a few sizes so that compiled functions are reused."""

from __future__ import annotations

FRAME_BUCKET = 64  # frames of an input
TOKEN_BUCKET = 16  # explained / decoded tokens
SEGMENT_BUCKET = 256  # segment ids per granularity level


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= n."""
    return -(-n // multiple) * multiple


def bucket(n: int, size: int = FRAME_BUCKET) -> int:
    """Padded size of n items: a positive multiple of ``size``."""
    return max(size, round_up(n, size))
