"""GAN objectives on raw discriminator (critic) outputs.

Each objective gives D's loss (to minimise) from real and fake outputs and G's loss from fake
outputs. The cross-entropy ones use softplus: -log(sigmoid(t)) = softplus(-t) and
-log(1 - sigmoid(t)) = softplus(t), which is exact and numerically stable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class Objective:
    name: str
    d_loss: Callable[[Tensor, Tensor, float], Tensor]  # (real, fake, label_smoothing) -> scalar
    g_loss: Callable[[Tensor], Tensor]  # fake -> scalar
    cross_entropy: bool  # D is a classifier with a sigmoid (label smoothing applies)


def _d_bce(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    # maximize log(D(x)) + log(1 - D(G(z))); one-sided smoothing: real target 1 - s (Salimans et al.)
    real_term = (1 - smoothing) * F.softplus(-real) + smoothing * F.softplus(real)
    return real_term.mean() + F.softplus(fake).mean()


def _d_wasserstein(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    # the critic maximizes E[f(x)] - E[f(G(z))] (Arjovsky et al. 2017)
    return fake.mean() - real.mean()


def _d_hinge(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _g_critic(fake: Tensor) -> Tensor:
    return -fake.mean()


OBJECTIVES: dict[str, Objective] = {
    # G maximizes log D(G(z)): strong gradients early, when D rejects the fakes (Goodfellow et al. 2014).
    "non-saturating": Objective("non-saturating", _d_bce, lambda fake: F.softplus(-fake).mean(), True),
    # G minimizes log(1 - D(G(z))): the original minimax game; its gradient vanishes when D wins.
    "minimax": Objective("minimax", _d_bce, lambda fake: -F.softplus(fake).mean(), True),
    # Wasserstein critic; Lipschitz by weight clipping (train.py clips after each D step).
    "wgan": Objective("wgan", _d_wasserstein, _g_critic, False),
    # Wasserstein critic; Lipschitz by a gradient penalty (train.py adds it; Gulrajani et al. 2017).
    "wgan-gp": Objective("wgan-gp", _d_wasserstein, _g_critic, False),
    # hinge loss (Lim & Ye 2017; Miyato et al. 2018 with spectral normalisation).
    "hinge": Objective("hinge", _d_hinge, _g_critic, False),
}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(OBJECTIVES)}") from None


def gradient_penalty(D, real: Tensor, fake: Tensor, y: Tensor | None, generator: torch.Generator) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates x_hat of real and fake (WGAN-GP)."""
    eps = torch.rand(len(real), 1, 1, 1, generator=generator)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat, y).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(real_logit: Tensor, real: Tensor) -> Tensor:
    """E[||grad_x D(x)||^2] on real images x (which must require grad); the caller scales by gamma/2."""
    (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()


def _translation(x: Tensor, gen: torch.Generator, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ratio * side pixels, padding with the background (-1)."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=gen)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=gen)
    rows = (torch.arange(h).view(1, h, 1) - dy).expand(n, h, w)
    cols = (torch.arange(w).view(1, 1, w) - dx).expand(n, h, w)
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    moved = x.flatten(2).gather(2, flat).view_as(x)
    return torch.where(inside, moved, torch.full_like(x, -1.0))


def _cutout(x: Tensor, gen: torch.Generator, ratio: float = 0.5) -> Tensor:
    """Blank one square of side ratio * side at a random place in each image (set to the background)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    hole = ((ys - cy).abs() * 2 < ch) & ((xs - cx).abs() * 2 < cw)
    return torch.where(hole.unsqueeze(1), torch.full_like(x, -1.0), x)


# DiffAugment (Zhao et al. 2020): the same differentiable augmentations on real and fake images
# before D, so D cannot memorise the real set and G is not taught to draw the augmentations.
AUGMENTS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "translation": _translation,
    "cutout": _cutout,
}


def diff_augment(x: Tensor, policy, gen: torch.Generator) -> Tensor:
    for name in policy:
        x = AUGMENTS[name](x, gen)
    return x
