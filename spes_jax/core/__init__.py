"""The SPES engine core: host segmentation, on-device masks, scoring and the compiled sweep.

    plan = make_plan(model.module, config, devices)
    state = init(params, prepare(features, tokens, segment(features, config), utt_id, config, plan), plan=plan)
    state = spectrogram_step(state, i, plan=plan)   # i = 0, 1, ...; likewise prefix_step
    spectrogram_map, prefix_map = finalize(state, plan=plan)
"""

from .perturbation import (BubbleMasks, OrthogonalMasks, ReplayedSegmentMasks, ReplayedTokenMasks, SegmentMasks, TokenMasks,
                           utterance_key)
from .scoring import impact, kl, prob_diff
from .segmentation import Segmentation, prefetch, requested_segments, segment
from .sweep import (InputLayout, SweepInputs, SweepPlan, SweepState, Sums, feature_sums, finalize, init, local_batch_shapes,
                    make_plan, prefix_map, prefix_step, prefix_sums, prepare, run, segment_sums, spectrogram_map,
                    spectrogram_step, split_half_r, SweepResult, trace_counts)

__all__ = ["BubbleMasks", "OrthogonalMasks", "ReplayedSegmentMasks", "ReplayedTokenMasks", "SegmentMasks", "TokenMasks",
           "utterance_key", "impact", "kl", "prob_diff", "Segmentation", "prefetch", "requested_segments", "segment",
           "InputLayout", "SweepInputs", "SweepPlan", "SweepState", "Sums", "feature_sums", "finalize", "init", "local_batch_shapes",
           "make_plan", "prefix_map", "prefix_step", "prefix_sums", "prepare", "run", "segment_sums",
           "spectrogram_map", "spectrogram_step", "split_half_r", "SweepResult", "trace_counts"]
