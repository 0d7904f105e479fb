"""The SPES engine core: host segmentation, on-device masks, scoring and the compiled sweep engine.

    plan = make_plan(model.module, config, devices)
    state = init(params, prepare(features, tokens, segment(features, config), utt_id, config, plan), plan=plan)
    result = run(state, plan, config)   # result.spectrogram (L, T, C), result.prefix (L, L)

``engine`` runs every sweep kind; ``sweep`` (SPES), ``contrastive_sweep`` and ``encoder_sweep`` are its probes.
"""

from . import engine
from .engine import (Features, Positions, Segments, Sums, SweepPlan, SweepResult, SweepState, feature_sums,
                     finalize, init, prefix_map, prefix_sums, segment_sums, spectrogram_map, split_half_r)
from .perturbation import (BubbleMasks, OrthogonalMasks, ReplayedSegmentMasks, ReplayedTokenMasks, SegmentMasks,
                           TokenMasks, utterance_key)
from .scoring import impact, kl, prob_diff
from .segmentation import Segmentation, prefetch, requested_segments, segment
from .sweep import (InputLayout, SpesProbe, SweepInputs, local_batch_shapes, make_plan, prefix_step, prepare, run,
                    spectrogram_step, trace_counts)

__all__ = ["engine", "Features", "Positions", "Segments", "Sums", "SweepPlan", "SweepResult", "SweepState",
           "feature_sums", "finalize", "init", "prefix_map", "prefix_sums", "segment_sums", "spectrogram_map",
           "split_half_r", "BubbleMasks", "OrthogonalMasks", "ReplayedSegmentMasks", "ReplayedTokenMasks",
           "SegmentMasks", "TokenMasks", "utterance_key", "impact", "kl", "prob_diff", "Segmentation", "prefetch",
           "requested_segments", "segment", "InputLayout", "SpesProbe", "SweepInputs", "local_batch_shapes",
           "make_plan",
           "prefix_step", "prepare", "run", "spectrogram_step", "trace_counts"]
