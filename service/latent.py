"""Latent vectors: one seed per image, truncation, interpolation, walks and arithmetic.

Why seeds per image: an image depends only on (model, seed, label), never on which batch it ran
in. The rule (docs/MODEL_FORMAT.md): `rng = numpy.random.default_rng(seed)`,
`z = rng.standard_normal(latent_dim)`; for conditional models without a given label the label is
`rng.integers(num_classes)` drawn right after z (drawn, and discarded, even when a label is given,
so that truncation sees the same stream); truncation then resamples every |z_i| > t from the same
rng until none is left.
"""

from __future__ import annotations

import numpy as np


def seeded(seed: int, latent_dim: int, num_classes: int = 0, truncation: float | None = None):
    """(z float32 [latent_dim], label drawn from the seed or None) for one seed."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(latent_dim)
    label = int(rng.integers(num_classes)) if num_classes else None
    if truncation is not None:
        z = truncate(z, truncation, rng)
    return z.astype(np.float32), label


def truncate(z: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    """Resample coordinates with |z_i| > t from `rng` (the truncation trick, BigGAN style)."""
    z = np.array(z, dtype=np.float64)
    bad = np.abs(z) > t
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > t
    return z


def latents_for_seeds(seeds, latent_dim: int, num_classes: int = 0, truncation: float | None = None):
    """Z float32 [N, latent_dim] and the labels drawn from each seed (None for unconditional)."""
    z = np.empty((len(seeds), latent_dim), dtype=np.float32)
    labels = [] if num_classes else None
    for i, s in enumerate(seeds):
        z[i], label = seeded(s, latent_dim, num_classes, truncation)
        if labels is not None:
            labels.append(label)
    return z, labels


def one_hot(labels, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return (1.0 - t) * a + t * b


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation (White 2016): stays on the shell where Gaussian latents live."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0 or nb == 0:
        return lerp(a64, b64, t)
    cos = np.clip(np.dot(a64 / na, b64 / nb), -1.0, 1.0)
    omega = np.arccos(cos)
    if omega < 1e-6:  # (nearly) parallel: slerp degenerates to lerp
        return lerp(a64, b64, t)
    so = np.sin(omega)
    return np.sin((1.0 - t) * omega) / so * a64 + np.sin(t * omega) / so * b64


def walk(points: np.ndarray, steps: int, method: str = "slerp", labels: np.ndarray | None = None):
    """Frames through keyframes: `steps` frames per segment from its start, then the last keyframe.

    points [K, d]; labels [K, k] (interpolated linearly) or None. Returns (Z [F, d] float32,
    Y [F, k] float32 or None, t [F]) with F = (K - 1) * steps + 1.
    """
    interp = slerp if method == "slerp" else lerp
    k = len(points)
    zs, ys, ts = [], [], []
    for s in range(k - 1):
        for j in range(steps):
            u = j / steps
            zs.append(interp(points[s], points[s + 1], u))
            if labels is not None:
                ys.append(lerp(labels[s], labels[s + 1], u))
            ts.append((s + u) / (k - 1))
    zs.append(points[-1])
    if labels is not None:
        ys.append(labels[-1])
    ts.append(1.0)
    y = np.asarray(ys, dtype=np.float32) if labels is not None else None
    return np.asarray(zs, dtype=np.float32), y, np.asarray(ts)


def combine(groups: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """sum_i w_i * mean(group_i): DCGAN's vector arithmetic on averaged latents (Radford et al.)."""
    out = np.zeros(groups[0].shape[1], dtype=np.float64)
    for g, w in zip(groups, weights, strict=True):
        out += w * np.asarray(g, np.float64).mean(axis=0)
    return out.astype(np.float32)


def neighbours(z: np.ndarray, k: int, scale: float, seed: int) -> np.ndarray:
    """k samples z + U(-scale, scale) noise (the DCGAN paper's figure 7 uses scale 0.25)."""
    rng = np.random.default_rng(seed)
    return (z[None, :] + rng.uniform(-scale, scale, size=(k, z.shape[0]))).astype(np.float32)
