"""GAN objectives on raw discriminator logits.

Each objective gives D's loss (to minimise) from real and fake logits and G's loss from fake logits.
Written with softplus: -log(sigmoid(t)) = softplus(-t) and -log(1 - sigmoid(t)) = softplus(t),
which is exact and numerically stable.
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
    d_loss: Callable[[Tensor, Tensor], Tensor]  # (real_logits, fake_logits) -> scalar
    g_loss: Callable[[Tensor], Tensor]  # fake_logits -> scalar


def _d_bce(real: Tensor, fake: Tensor) -> Tensor:
    # maximize log(D(x)) + log(1 - D(G(z)))
    return F.softplus(-real).mean() + F.softplus(fake).mean()


OBJECTIVES: dict[str, Objective] = {
    # G maximizes log D(G(z)): strong gradients early, when D rejects the fakes (Goodfellow et al. 2014).
    "non-saturating": Objective("non-saturating", _d_bce, lambda fake: F.softplus(-fake).mean()),
    # G minimizes log(1 - D(G(z))): the original minimax game; its gradient vanishes when D wins.
    "minimax": Objective("minimax", _d_bce, lambda fake: -F.softplus(fake).mean()),
}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(OBJECTIVES)}") from None
