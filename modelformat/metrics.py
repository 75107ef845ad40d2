"""Sample-quality math shared by evaluation (training) and `/score` (service): numpy only.

Why numpy only: the same numbers for any feature network (the model directory's classifier
stands in for Inception, which cannot be downloaded here), in either wing. FID's trace term
needs no general matrix square root: Tr sqrt(S1 S2) is the nuclear norm (sum of singular values)
of sqrt(S1) sqrt(S2), and each factor is a symmetric PSD root from `eigh`. Against the exact value
(the nuclear norm of A1 A2^T for centred feature sets) this was within 4e-13 where scipy's
`sqrtm(S1 @ S2)` was off by up to 4e-6 (rank-deficient covariances: fewer images than features).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STABLE_FID_N = 1000  # below this many images FID is biased upward and noisy


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over the whole set (Salimans et al. 2016)."""
    p = np.asarray(probs, np.float64)
    py = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(py + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def inception_score_splits(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and std of the Inception Score over `splits` equal parts (the paper's protocol)."""
    scores = [inception_score(part) for part in np.array_split(np.asarray(probs, np.float64), splits)]
    return float(np.mean(scores)), float(np.std(scores))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and covariance [F, F] of features [N, F] (float64)."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) (Heusel et al. 2017)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    tr_covmean = np.linalg.svd(_sqrt_psd(s1) @ _sqrt_psd(s2), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean, 0.0))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets [N, F]."""
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def fid_warning(n: int) -> str | None:
    if n < 2:
        return f"FID needs at least 2 images (got {n})"
    if n < STABLE_FID_N:
        return f"FID from {n} images is biased upward and unstable; use at least {STABLE_FID_N}"
    return None


# reference_stats.npz (docs/MODEL_FORMAT.md); the service reads it in service/registry.py.


def save_reference_stats(path: str | Path, features: np.ndarray) -> None:
    mu, sigma = feature_stats(features)
    np.savez(path, mu=mu, sigma=sigma, n=np.int64(len(features)))
