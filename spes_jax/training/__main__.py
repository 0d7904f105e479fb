"""usage: python -m spes_jax.training COMMAND [options]: the recipes that build and score the embedded models.

    train          one training run (train.py)
    embedded       an embedded model from nothing, all its stages (embedded.py)
    evaluate       a model on the held-out spliced test set
    evaluate-sets  a model on the robust held-out sets (a)-(d) and long inputs (robust.py)
    data           the held-out corpus as WAV files and manifests (needs espeak-ng)
    export         one robust held-out set as WAV files and manifests
    throughput     how fast robust training examples are made

python -m spes_jax.training COMMAND --help describes each.
"""

from __future__ import annotations

import sys

from ..errors import SpesError


def _commands() -> dict:
    from . import data, embedded, robust, train

    return {"train": train.main, "embedded": embedded.main, "evaluate": train.evaluate_main,
            "evaluate-sets": robust.evaluate_main, "data": data.main, "export": robust.export_main,
            "throughput": robust.throughput_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = _commands()
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        commands[argv[0]](argv[1:])
    except SpesError as e:  # bad --mix, espeak-ng missing, ...: one message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # nothing half-written: model directories and markers are written atomically
        print("interrupted" + (" (the same command continues at the unfinished stage)"
                               if argv[0] == "embedded" else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
