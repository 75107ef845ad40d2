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
