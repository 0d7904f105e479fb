"""fairseq/FBK state_dict and args -> ``ModelConfig`` and Flax parameters; the whole conversion."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from typing import Any, Callable

import jax
import numpy as np

from spes_jax.errors import SpesError
from spes_jax.models import ModelConfig, init_params
from spes_jax.models.config import CONFORMER_ARCHS
from spes_jax.models.conformer import interleaved_sinusoids
from spes_jax.models.io import save_model_dir
from spes_jax.text import Dictionary

from .archs import model_name
from .torch_pickle import load_checkpoint

# Buffers that carry no learned state (recomputed here) or only bookkeeping.
_IGNORED = re.compile(r"(\.version|\._float_tensor|\.num_batches_tracked)$")
_POSITIONAL_TABLE = re.compile(r"\.positional_encoding\.pe$")
# GaussPenalty's learned variances: parameters of the distance penalty, which never runs (see notes).
_PENALTY_VARIANCE = re.compile(r"^encoder\.transformer_layers\.\d+\.self_attn\.penalty\.variance$")
_AUX_FC = "auxiliary_decoder.fc.weight"
_TIED = ("decoder.output_projection.weight", "decoder.embed_tokens.weight")
CTC_BLANK = "<ctc_blank>"
REFERENCE = "FBK-fairseq 4cd7c6dc"


def prepare_state_dict(args: dict, state_dict: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
    """Resolves what the reference stores but the port keeps once or not at all.

    Returns the state_dict to convert and the notes to report: every option that is accepted
    although it changes nothing, or only the reference's batched numerics, is named there.
    """
    arch, model = model_name(args)
    sd = dict(state_dict)
    notes: list[str] = []
    if bool(args.get("share_decoder_input_output_embed", False)) and _TIED[0] in sd:
        # fairseq ties the two modules to one tensor and saves it under both names.
        proj, emb = (np.asarray(sd[k]) for k in _TIED)
        if proj.shape != emb.shape or not np.array_equal(proj, emb):
            raise SpesError(f"share_decoder_input_output_embed is set, but {_TIED[0]} differs from {_TIED[1]}: "
                            f"the checkpoint's tied embeddings are inconsistent")
        del sd[_TIED[0]]
    penalty = args.get("distance_penalty") or False
    if penalty:
        if model == "s2t_transformer_fbk":
            variances = [k for k in sd if _PENALTY_VARIANCE.match(k)]
            for k in variances:
                del sd[k]
            notes.append(f"--distance-penalty {penalty} ignored: in {REFERENCE} the encoder's LocalAttention "
                         f"takes torch's fused attention path, which returns before the penalty is applied, "
                         f"so the option never changes the reference's output (on CPU and GPU)"
                         + (f"; its {len(variances)} unused penalty.variance entries are dropped" if variances
                            else ""))
        else:
            notes.append(f"--distance-penalty {penalty} ignored: {arch} layers do not read it")
    if args.get("batch_unsafe_relative_shift") and model in CONFORMER_ARCHS:
        notes.append("--batch-unsafe-relative-shift: converted with the padding-aware relative shift, which "
                     "gives the same result for an input computed alone; fairseq's batched outputs of this "
                     "model depend on the other inputs' padding, while spes-jax computes every input as if "
                     "alone (compare with the reference's single-input outputs)")
    if model == "conformer_joint_ctc":
        aux = sorted(k for k in sd if k.startswith("auxiliary_decoder."))
        if any(k.startswith("auxiliary_decoder.lang_embed_layernorm.") for k in aux):
            for k in aux:
                del sd[k]
            notes.append("auxiliary CTC decoder dropped: it adds the embedding of the target's language tag "
                         "(--ignore-prefix-size), which a CTC head on the audio alone cannot reproduce; beam "
                         "search does not use it")
        elif aux:
            notes.append("auxiliary CTC decoder converted (S2TModel.auxiliary_ctc); beam search uses the "
                         "Transformer decoder only, as the reference's does")
    return sd, notes


def model_config_from_args(args: dict, state_dict: dict[str, np.ndarray]) -> ModelConfig:
    """Reads every size from the checkpoint's args; vocabulary sizes from the weights themselves."""
    _, arch = model_name(args)

    def get(name, default=None):
        v = args.get(name, default)
        if v is None:
            raise SpesError(f"checkpoint args lack '{name}'")
        return v

    ctc = "encoder.ctc_fc.weight" in state_dict
    kernels = get("conv_kernel_sizes", "5,5")
    kernels = tuple(int(k) for k in (kernels.split(",") if isinstance(kernels, str) else kernels))
    kw: dict[str, Any] = dict(
        arch=arch,
        input_feat_per_channel=int(get("input_feat_per_channel", 80)),
        input_channels=int(get("input_channels", 1)),
        conv_channels=int(get("conv_channels")),
        conv_kernel_sizes=kernels,
        encoder_embed_dim=int(get("encoder_embed_dim")),
        encoder_layers=int(get("encoder_layers")),
        encoder_attention_heads=int(get("encoder_attention_heads")),
        encoder_ffn_embed_dim=int(get("encoder_ffn_embed_dim")),
        encoder_normalize_before=bool(get("encoder_normalize_before", True)),
        no_scale_embedding=bool(get("no_scale_embedding", False)),
        ctc_encoder_layer=int(get("ctc_encoder_layer")) if ctc else 0,
        ctc_vocab_size=int(state_dict["encoder.ctc_fc.weight"].shape[0]) if ctc else 0,
        ctc_compress_strategy=str(get("ctc_compress_strategy", "none")) if ctc else "none",
        ctc_compress_fixed_ratio=int(get("ctc_compress_fixed_ratio", 4)),
        ctc_compress_max_out_size=int(get("ctc_compress_max_out_size", -1)),
        auxiliary_ctc_vocab_size=int(state_dict[_AUX_FC].shape[0]) if _AUX_FC in state_dict else 0,
        decoder_embed_dim=int(get("decoder_embed_dim")),
        decoder_layers=int(get("decoder_layers")),
        decoder_attention_heads=int(get("decoder_attention_heads")),
        decoder_ffn_embed_dim=int(get("decoder_ffn_embed_dim")),
        decoder_normalize_before=bool(get("decoder_normalize_before", False)),
        decoder_learned_pos=bool(get("decoder_learned_pos", False)),
        decoder_activation_fn=str(get("activation_fn", "relu")),
        share_decoder_input_output_embed=bool(get("share_decoder_input_output_embed", False)),
        vocab_size=int(state_dict["decoder.embed_tokens.weight"].shape[0]),
        pad=int(get("pad", 1)),
        eos=int(get("eos", 2)),
        max_source_positions=int(get("max_source_positions", 6000)),
        max_target_positions=int(get("max_target_positions", 1024)),
    )
    if arch in CONFORMER_ARCHS:
        kw.update(
            feed_forward_expansion_factor=int(get("feed_forward_expansion_factor", 4)),
            conv_expansion_factor=int(get("conv_expansion_factor", 2)),
            conformer_conv_kernel_size=int(get("conformer_conv_kernel_size", 31)),
            conformer_half_step_residual=bool(get("conformer_half_step_residual", True)),
        )
    if "decoder.embed_tokens.weight" not in state_dict:
        raise SpesError("checkpoint has no decoder.embed_tokens.weight")
    return ModelConfig(**kw)


def _flax_path(key: str) -> list[str]:
    """'encoder.conformer_layers.0.attention.u_bias' -> ['encoder', 'conformer_layers_0', 'attention', 'u_bias']."""
    out: list[str] = []
    for part in key.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return out


def _leaf(module: dict, torch_name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """Maps a torch parameter name to the Flax leaf of ``module`` and converts the layout."""
    if torch_name == "weight":
        if "kernel" in module:
            kernel = module["kernel"]
            if value.ndim == 3 and len(kernel) == 2:  # pointwise Conv1d -> Dense
                return "kernel", value[:, :, 0].T
            if value.ndim == 3:  # Conv1d (out, in/groups, k) -> (k, in/groups, out)
                return "kernel", value.transpose(2, 1, 0)
            return "kernel", value.T
        if "embedding" in module:
            return "embedding", value
        return "scale", value  # LayerNorm / BatchNorm
    return {"running_mean": "mean", "running_var": "var"}.get(torch_name, torch_name), value


def state_dict_to_params(state_dict: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """Builds the Flax parameter tree; fails on any missing, unused or mis-shaped entry."""
    shapes = jax.eval_shape(lambda: init_params(cfg, frames=16, tokens=2))
    target = jax.tree_util.tree_map(lambda s: s.shape, shapes)
    params: dict = {}
    unused = []
    for key, value in state_dict.items():
        value = np.asarray(value)
        if _IGNORED.search(key):
            continue
        if _POSITIONAL_TABLE.search(key):
            _check_positional_table(key, value, cfg.encoder_embed_dim)
            continue
        *path, name = _flax_path(key)
        node = target
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if not isinstance(node, dict):
            unused.append(key)
            continue
        leaf, converted = _leaf(node, name, value)
        if leaf not in node:
            unused.append(key)
            continue
        if tuple(node[leaf]) != converted.shape:
            raise SpesError(f"shape mismatch for {key}: checkpoint {value.shape}, model expects "
                            f"{tuple(node[leaf])} after conversion")
        dest = params
        for p in path:
            dest = dest.setdefault(p, {})
        dest[leaf] = np.ascontiguousarray(converted, dtype=np.float32)
    if unused:
        raise SpesError(f"{len(unused)} checkpoint entries do not belong to a {cfg.arch} model: "
                        f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    missing = [("/".join(map(str, (k.key for k in p)))) for p, _ in
               jax.tree_util.tree_flatten_with_path(target, is_leaf=lambda x: isinstance(x, tuple))[0]
               if not _has(params, [k.key for k in p])]
    if missing:
        raise SpesError(f"{len(missing)} model parameters missing from the checkpoint: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return params


def _has(tree: dict, path: list[str]) -> bool:
    for p in path:
        if not isinstance(tree, dict) or p not in tree:
            return False
        tree = tree[p]
    return True


def _check_positional_table(key: str, value: np.ndarray, dim: int) -> None:
    table = value.reshape(-1, value.shape[-1])
    if table.shape[1] != dim:
        raise SpesError(f"{key}: positional table width {table.shape[1]}, expected {dim}")
    n = min(table.shape[0], 2048)
    if np.abs(table[:n] - np.asarray(interleaved_sinusoids(n, dim))).max() > 1e-4:
        raise SpesError(f"{key}: positional table is not the standard interleaved sinusoid table")


def _read_data_config(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SpesError(f"cannot read data config {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise SpesError(f"{path}: not a fairseq S2T data config")
    return cfg


def _resolve(name: str | None, yaml_dir: str) -> str | None:
    """fairseq resolves data-config paths against the working directory; we also try the yaml's folder."""
    if not name:
        return None
    for candidate in (name, os.path.join(yaml_dir, name)):
        if os.path.isfile(candidate):
            return candidate
    raise SpesError(f"file named in the data config not found: {name}")


def convert_checkpoint(checkpoint: str, out_dir: str, config_yaml: str | None = None,
                       dict_path: str | None = None, spm_path: str | None = None,
                       overwrite: bool = False, report: Callable[[str], None] | None = None) -> str:
    """Converts an FBK-fairseq checkpoint into a spes-jax model directory and returns its path.

    Notes on accepted-but-ignored options go to ``report`` (if given) and into config.json's
    ``source.notes``.
    """
    ckpt = load_checkpoint(checkpoint)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise SpesError(f"{checkpoint}: not a fairseq checkpoint (no 'model' state_dict)")
    cfg_args = ckpt.get("cfg") or {}
    args = cfg_args.get("model") if isinstance(cfg_args, dict) else None
    args = args or ckpt.get("args")
    if not isinstance(args, dict):
        raise SpesError(f"{checkpoint}: not a fairseq checkpoint (no model args in 'cfg' or 'args')")
    state_dict, notes = prepare_state_dict(args, ckpt["model"])
    cfg = model_config_from_args(args, state_dict)
    params = state_dict_to_params(state_dict, cfg)

    data: dict[str, Any] = {}
    if config_yaml:
        ycfg = _read_data_config(config_yaml)
        yaml_dir = os.path.dirname(os.path.abspath(config_yaml))
        transforms = (ycfg.get("transforms") or {}).get("*", [])
        if any(t != "utterance_cmvn" for t in transforms):
            raise SpesError(f"{config_yaml}: feature transforms {transforms} are not supported "
                            f"(only utterance_cmvn)")
        data["cmvn"] = "utterance" if "utterance_cmvn" in transforms else "none"
        data["num_mel_bins"] = int(ycfg.get("input_feat_per_channel", 80))
        dict_path = dict_path or _resolve(ycfg.get("vocab_filename"), yaml_dir)
        bpe = ycfg.get("bpe_tokenizer") or {}
        if spm_path is None and bpe.get("bpe") == "sentencepiece":
            spm_path = _resolve(bpe.get("sentencepiece_model"), yaml_dir)
    if not dict_path:
        raise SpesError("no target dictionary: pass --dict or a --config-yaml naming vocab_filename")
    dictionary = Dictionary.load(dict_path)
    # conformer_joint_ctc's build_model adds <ctc_blank> to the target dictionary (add_symbol: only if new).
    extra = [CTC_BLANK] if cfg.arch == "conformer_joint_ctc" and CTC_BLANK not in dictionary.symbols else []
    if len(dictionary) + len(extra) != cfg.vocab_size:
        raise SpesError(f"vocabulary mismatch: {dict_path} gives {len(dictionary)} symbols"
                        f"{' + ' + CTC_BLANK if extra else ''}, the checkpoint's decoder has {cfg.vocab_size}")
    if extra:
        notes.append(f"{CTC_BLANK} appended to the target dictionary (id {len(dictionary)}), as "
                     f"conformer_joint_ctc's build_model does")
    if data.get("num_mel_bins", cfg.input_feat_per_channel) != cfg.input_feat_per_channel:
        raise SpesError("data config and checkpoint disagree on the number of mel bins")
    with open(checkpoint, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    source = {"checkpoint": os.path.basename(checkpoint), "sha256": digest, "arch": model_name(args)[0],
              "notes": notes}
    with tempfile.TemporaryDirectory() as tmp:
        if extra:
            dict_path = _extended_dictionary(dict_path, extra, tmp)
        out = save_model_dir(out_dir, cfg, params, dict_path, spm_path, data, source, overwrite)
    if report is not None:
        for note in notes:
            report(note)
    return out


def _extended_dictionary(path: str, symbols: list[str], tmp_dir: str) -> str:
    """A copy of the dictionary file at ``path`` with ``symbols`` appended (count 1), in ``tmp_dir``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = os.path.join(tmp_dir, "dict.txt")
    with open(out, "w", encoding="utf-8") as f:
        f.write(text + ("" if not text or text.endswith("\n") else "\n") + "".join(f"{s} 1\n" for s in symbols))
    return out
