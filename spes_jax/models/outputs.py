"""Pytree containers passed between the encoder, the decoder and the engines."""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class EncoderOutput:
    """What the decoder needs from the encoder, plus what parity tests and CTC users read.

    out: (B, S, D) final encoder states (padded rows hold garbage; use ``valid``).
    valid: (B, S) bool, True on real (non-pad) positions.
    ctc_logits: (B, T', V_ctc) raw CTC logits at the CTC layer (before compression), or None.
    ctc_lengths: (B,) valid CTC frames (= subsampled lengths).
    states: per encoder layer (B, S, D) outputs (after the CTC layer: of the compressed sequence).
    """

    out: jax.Array
    valid: jax.Array
    ctc_logits: jax.Array | None
    ctc_lengths: jax.Array
    states: tuple[jax.Array, ...]
