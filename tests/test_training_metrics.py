"""Metric math on cases with known answers: the contract's FID/IS (modelformat.metrics, used by
evaluation and /score alike) and evaluation's diversity."""

import numpy as np
import pytest

from modelformat.metrics import fid, inception_score_splits, sigmoid, softmax
from modelformat.metrics import frechet_distance as fid_from_stats
from training.evaluate import mean_pairwise_distance, per_class_diversity


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
    mean, std = inception_score_splits(probs, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_of_one_class_or_uncertain_predictions_is_one():
    assert inception_score_splits(np.eye(10)[np.zeros(100, int)], splits=2)[0] == pytest.approx(1.0)
    assert inception_score_splits(np.full((100, 10), 0.1), splits=2)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("n", [10, 50, 300])
def test_fid_trace_term_is_exact_for_rank_deficient_covariances(n):
    """With fewer images than features the covariances are singular; Tr sqrt(S1 S2) must still
    equal its exact value, the nuclear norm of A1 A2^T / (n - 1) for centred feature sets."""
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 128)), rng.normal(size=(n, 128)) * 1.3
    a[:, :32] = b[:, :32] = 0  # dead features, as a ReLU layer gives
    ac, bc = a - a.mean(0), b - b.mean(0)
    exact_trace = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / (n - 1)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    exact = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * exact_trace
    assert fid(a, b) == pytest.approx(exact, rel=1e-11)


def test_softmax_and_sigmoid_stay_finite_for_large_logits():
    p = softmax(np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(sigmoid(np.array([-1e4, 0.0, 1e4])), [0.0, 0.5, 1.0])


def test_diversity_sees_collapse():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(size=(50, 4)), np.ones((50, 4))])
    labels = np.repeat([0, 1], 50)
    spread, collapsed = per_class_diversity(features, labels, 2)
    assert spread > 1.0 and collapsed == pytest.approx(0.0, abs=1e-9)
    assert mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
