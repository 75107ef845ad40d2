"""The per-seed latent rule (docs/MODEL_FORMAT.md): a seed means the same z everywhere.

`rng = numpy.random.default_rng(seed)`, `z = rng.standard_normal(latent_dim)`; for conditional
models the label is `rng.integers(num_classes)` drawn right after z (drawn, and discarded, even
when a label is given, so that truncation sees the same stream); truncation then resamples every
|z_i| > t from the same rng until none is left. z is cast to float32 last.

Why one seed per image: an image depends only on (model, seed, label), never on which batch it
ran in; training's sample grids, evaluation and the service all call this module.
"""

from __future__ import annotations

import numpy as np

# The rule's name, recorded wherever a result must be re-made from seeds (dataset manifests).
RULE = (
    "ganserve-latent-v1: numpy default_rng(seed); z = standard_normal(latent_dim); "
    "label = integers(num_classes); truncation resamples from the same rng"
)


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
    """The generator's and discriminator's `y`: float32 [N, num_classes]."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
