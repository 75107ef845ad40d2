"""Scores from the model's own networks: realness, classifier labels, Inception Score and FID.

The math is the contract's (`modelformat.metrics`, numpy only), so `/score` and training's
evaluation compute the same numbers; re-exported here for the routes.
"""

from __future__ import annotations

from modelformat.metrics import (
    STABLE_FID_N,
    feature_stats,
    fid_warning,
    frechet_distance,
    inception_score,
    sigmoid,
    softmax,
)

__all__ = [
    "STABLE_FID_N",
    "feature_stats",
    "fid_warning",
    "frechet_distance",
    "inception_score",
    "sigmoid",
    "softmax",
]
