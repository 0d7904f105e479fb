"""fairseq checkpoint -> spes-jax converted model directory, without PyTorch.

``load_checkpoint`` reads a ``torch.save`` file (zip or legacy format) with a restricted unpickler
that only rebuilds tensors (as numpy), containers, ``argparse.Namespace`` and omegaconf configs;
nothing in the file is ever executed. ``convert_checkpoint`` maps its state_dict onto the Flax
parameter tree and writes the directory ``spes_jax.load_model`` reads.
"""

from .archs import ARCHITECTURES
from .fairseq import convert_checkpoint, model_config_from_args, prepare_state_dict, state_dict_to_params
from .torch_pickle import UnsafeCheckpointError, load_checkpoint

__all__ = ["ARCHITECTURES", "convert_checkpoint", "load_checkpoint", "model_config_from_args",
           "prepare_state_dict", "state_dict_to_params", "UnsafeCheckpointError"]
