"""DCGAN generator and discriminator (Radford et al. 2016), conditional variants, and the classifier.

DCGAN rules followed: fractionally-strided convolutions in G, strided convolutions in D, no pooling,
batchnorm in both (not on G's output nor D's input), ReLU + Tanh in G, LeakyReLU(0.2) in D, weights
drawn from N(0, 0.02).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SUPPORTED_SIZES = (28, 32, 64)


@dataclass(frozen=True)
class GANConfig:
    image_size: int = 28  # 28, 32 or 64
    channels: int = 1  # 1 (grey) or 3 (RGB)
    latent_dim: int = 100  # nz in the DCGAN paper
    num_classes: int = 0  # 0: unconditional; K > 0: G and D take a label vector y [N, K]
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    conditioning: str = "projection"  # how D sees the label: "projection" or "acgan" (auxiliary classifier)
    d_norm: str = "batch"  # D's normalisation: "batch" (DCGAN) or "none" (WGAN-GP's critic, spectral norm)
    spectral_norm: bool = False  # spectral normalisation of every D layer (Miyato et al. 2018)
    minibatch_stddev: bool = False  # append the batch's feature std as a channel before D's head
    d_extra_layers: int = 0  # 3x3 stride-1 conv blocks after D's last strided conv (deeper D, same side)

    def __post_init__(self):
        if self.image_size not in SUPPORTED_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.latent_dim < 1 or self.num_classes < 0:
            raise ValueError("latent_dim must be >= 1 and num_classes >= 0")
        if self.conditioning not in ("projection", "acgan"):
            raise ValueError(f"conditioning must be projection or acgan, got {self.conditioning!r}")
        if self.d_norm not in ("batch", "none"):
            raise ValueError(f"d_norm must be batch or none, got {self.d_norm!r}")
        if not 0 <= self.d_extra_layers <= 8:
            raise ValueError(f"d_extra_layers must be in [0, 8], got {self.d_extra_layers}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0


def _widths(cfg: GANConfig, base: int) -> list[int]:
    """Channel widths from the 4x4 / 7x7 stage to the last hidden stage."""
    return {
        28: [base * 4, base * 2],
        32: [base * 4, base * 2, base],
        64: [base * 8, base * 4, base * 2, base],
    }[cfg.image_size]


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); batchnorm weight N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        if nn.utils.parametrize.is_parametrized(module, "weight"):  # spectral norm: init the raw weight
            nn.init.normal_(module.parametrizations.weight.original, 0.0, 0.02)
        else:
            nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """G(z, y) -> image in [-1, 1]. The label vector is concatenated to z (soft labels work too)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        widths = _widths(cfg, cfg.ngf)
        first_kernel = 7 if cfg.image_size == 28 else 4
        nin = cfg.latent_dim + cfg.num_classes
        # input: (nz + K) x 1 x 1 -> state size. widths[0] x 7 x 7 (28 px) or x 4 x 4 (32/64 px)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nin, widths[0], first_kernel, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        # each stage doubles the side: 7 -> 14 (28 px); 4 -> 8 -> 16 (32 px); 4 -> 8 -> 16 -> 32 (64 px)
        for cin, cout in zip(widths, widths[1:], strict=False):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]
        # last stage: widths[-1] x S/2 x S/2 -> channels x S x S
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.conditional:
            z = torch.cat([z, y], dim=1)
        return self.main(z[:, :, None, None])


class MinibatchStddev(nn.Module):
    """Appends the mean over features of the batch's standard deviation as one more channel
    (Karras et al. 2018): D sees how varied the batch is, which penalises mode collapse."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        std = h.std(dim=0, unbiased=False).mean().expand(h.shape[0], 1, *h.shape[2:])
        return torch.cat([h, std], dim=1)


class Discriminator(nn.Module):
    """D(x, y) -> logit [N].

    Conditioning is by projection (Miyato & Koyama 2018) by default: logit = psi(phi(x)) + <V y, phi(x)>.
    We chose it over an extra label channel because it ties the label to the features D already
    uses to judge realness, which gives markedly better label fidelity in cGANs, and a linear map
    of y accepts soft label vectors unchanged. With `conditioning="acgan"` D instead predicts the
    class from phi(x) with an auxiliary head (Odena et al. 2017) and the logit ignores y.
    phi(x) is the flattened last feature map (no pooling).

    Spectral normalisation uses torch.nn.utils.parametrizations.spectral_norm: one power iteration
    per training forward pass, with u persisted between steps; in eval mode the stored u, v are used.
    """

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.ndf * 2**i for i in range(len(_widths(cfg, 1)))]  # ndf, 2 ndf, 4 ndf, ...
        sn = nn.utils.parametrizations.spectral_norm if cfg.spectral_norm else (lambda m: m)

        def norm(c: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(c)] if cfg.d_norm == "batch" else []

        # input: channels x S x S; the first block has no batchnorm (DCGAN rule)
        layers: list[nn.Module] = [
            sn(nn.Conv2d(cfg.channels, widths[0], 4, 2, 1, bias=False)),
            nn.LeakyReLU(0.2, True),
        ]
        for cin, cout in zip(widths, widths[1:], strict=False):
            layers += [sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=False)), *norm(cout), nn.LeakyReLU(0.2, True)]
        # extra layers (as in the WGAN authors' DCGAN code): more depth where the digit's shape is seen whole
        for _ in range(cfg.d_extra_layers):
            c = widths[-1]
            layers += [sn(nn.Conv2d(c, c, 3, 1, 1, bias=False)), *norm(c), nn.LeakyReLU(0.2, True)]
        if cfg.minibatch_stddev:
            layers.append(MinibatchStddev())
        self.features = nn.Sequential(*layers)
        side = 7 if cfg.image_size == 28 else 4
        # state size. widths[-1] (+1 with minibatch stddev) x 7 x 7 (28 px) or x 4 x 4 (32/64 px)
        self.feature_dim = (widths[-1] + cfg.minibatch_stddev) * side * side
        self.psi = sn(nn.Linear(self.feature_dim, 1))
        projection = cfg.conditional and cfg.conditioning == "projection"
        self.embed = sn(nn.Linear(cfg.num_classes, self.feature_dim, bias=False)) if projection else None
        acgan = cfg.conditional and cfg.conditioning == "acgan"
        self.aux = nn.Linear(self.feature_dim, cfg.num_classes) if acgan else None
        self.apply(init_weights)

    def forward_aux(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """(logit [N], class logits [N, K] or None)."""
        phi = self.features(x).flatten(1)
        logit = self.psi(phi).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(y) * phi).sum(dim=1)
        return logit, (self.aux(phi) if self.aux is not None else None)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_aux(x, y)[0]


class Classifier(nn.Module):
    """A small CNN for the metrics: `logits` [N, K] and penultimate `features` [N, F]."""

    def __init__(
        self, image_size: int = 28, channels: int = 1, num_classes: int = 10, feature_dim: int = 128
    ):
        super().__init__()
        self.image_shape = (channels, image_size, image_size)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
                nn.Conv2d(cout, cout, 3, 2, 1, bias=False),  # strided conv halves the side
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]

        self.body = nn.Sequential(*block(channels, 32), *block(32, 64), nn.Flatten())
        side = math.ceil(math.ceil(image_size / 2) / 2)  # two stride-2 convs
        self.fc = nn.Sequential(nn.Dropout(0.3), nn.Linear(64 * side * side, feature_dim), nn.ReLU(True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.fc(self.body(x))
        return self.head(features), features


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, num_classes).float()
