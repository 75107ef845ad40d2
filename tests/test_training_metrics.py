"""Metric math on cases with known answers."""

import numpy as np
import pytest

from training.evaluate import (
    fid,
    fid_from_stats,
    inception_score,
    mean_pairwise_distance,
    per_class_diversity,
)


def test_fid_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 6))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_shifted_gaussians_is_the_squared_mean_distance():
    sigma = np.diag([1.0, 2.0, 3.0])
    assert fid_from_stats(np.zeros(3), sigma, np.array([3.0, 4.0, 0.0]), sigma) == pytest.approx(25.0)


def test_fid_of_scaled_covariance_matches_closed_form():
    # tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)) with S1 = I, S2 = 4I in 2-D: 2 + 8 - 2 * 4 = 2
    assert fid_from_stats(np.zeros(2), np.eye(2), np.zeros(2), 4 * np.eye(2)) == pytest.approx(2.0)


def test_inception_score_of_uniform_confident_predictions_is_the_class_count():
    probs = np.eye(10)[np.arange(1000) % 10]
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_of_one_class_or_uncertain_predictions_is_one():
    assert inception_score(np.eye(10)[np.zeros(100, int)], splits=2)[0] == pytest.approx(1.0)
    assert inception_score(np.full((100, 10), 0.1), splits=2)[0] == pytest.approx(1.0)


def test_diversity_sees_collapse():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(size=(50, 4)), np.ones((50, 4))])
    labels = np.repeat([0, 1], 50)
    spread, collapsed = per_class_diversity(features, labels, 2)
    assert spread > 1.0 and collapsed == pytest.approx(0.0, abs=1e-9)
    assert mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
