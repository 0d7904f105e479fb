"""The architectures the converter accepts: exact ``--arch`` names, as FBK-fairseq registers them.

Each ``--arch`` name maps to the model it builds (``register_model`` name), which is what
``ModelConfig.arch`` stores. Size variants only change defaults that the checkpoint's args already
hold in full, so they convert exactly like their base. Nothing is matched by prefix: an
architecture that merely starts with a supported name (``conformer_with_tags``,
``s2t_transformer_triangle`` ...) is a different network and is refused by name.
"""

from __future__ import annotations

from spes_jax.errors import SpesError

_SIZES = ("s", "sp", "m", "mp", "l", "lp")

# arch name -> model name (FBK-fairseq 4cd7c6dc, register_model_architecture calls).
ARCHITECTURES: dict[str, str] = {
    # examples/speech_to_text/models/conformer.py
    "conformer": "conformer",
    "conformer_s": "conformer",
    # examples/speech_to_text/models/conformer_joint_ctc.py
    "conformer_joint_ctc": "conformer_joint_ctc",
    "conformer_joint_ctc_s": "conformer_joint_ctc",
    # examples/speech_to_text/models/s2t_transformer_fbk.py: the size comes before "_fbk"
    "s2t_transformer_fbk": "s2t_transformer_fbk",
    **{f"s2t_transformer_{s}_fbk": "s2t_transformer_fbk" for s in _SIZES},
    # fairseq/models/speech_to_text/s2t_transformer.py (fairseq's own S2T examples)
    "s2t_transformer": "s2t_transformer",
    **{f"s2t_transformer_{s}": "s2t_transformer" for s in _SIZES},
}


def model_name(args: dict) -> tuple[str, str]:
    """The checkpoint's exact ``--arch`` name and the model it builds; refuses anything else."""
    arch = str(args.get("arch") or args.get("_name") or "")
    if arch not in ARCHITECTURES:
        raise SpesError(f"checkpoint architecture '{arch or 'unknown'}' is not supported "
                        f"(supported: {', '.join(ARCHITECTURES)})")
    return arch, ARCHITECTURES[arch]
