"""Latent vectors: one seed per image (the contract's rule), interpolation, walks and arithmetic.

The per-seed rule itself (z, the label drawn from the seed, truncation) lives in
`modelformat.latent`, shared with training and evaluation; it is re-exported here for the routes.
"""

from __future__ import annotations

import numpy as np

from modelformat.latent import latents_for_seeds, one_hot, seeded, truncate

__all__ = [
    "combine",
    "latents_for_seeds",
    "lerp",
    "neighbours",
    "one_hot",
    "seeded",
    "slerp",
    "truncate",
    "walk",
]


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
