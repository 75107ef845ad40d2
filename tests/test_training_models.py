"""DCGAN architecture rules and output shapes for each supported size."""

import pytest
import torch
from torch import nn

from training.models import Classifier, Discriminator, GANConfig, Generator, one_hot


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [0, 4])
def test_shapes(size, channels, num_classes):
    cfg = GANConfig(image_size=size, channels=channels, latent_dim=16, num_classes=num_classes, ngf=8, ndf=8)
    G, D = Generator(cfg), Discriminator(cfg)
    y = one_hot(torch.arange(3) % 4, 4) if num_classes else None
    x = G(torch.randn(3, 16), y)
    assert x.shape == (3, channels, size, size)
    assert x.abs().max() <= 1.0
    assert D(x, y).shape == (3,)


def test_dcgan_rules():
    cfg = GANConfig(num_classes=10)
    G, D = Generator(cfg), Discriminator(cfg)
    kinds = {type(m) for m in [*G.modules(), *D.modules()]}
    assert not kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d}  # no pooling
    assert nn.ConvTranspose2d in {type(m) for m in G.modules()}
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    assert {type(m) for m in G.modules()} >= {nn.ReLU, nn.BatchNorm2d}
    leaky = [m for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.2 for m in leaky)
    assert all(m.stride == (2, 2) for m in D.modules() if isinstance(m, nn.Conv2d))
    weights = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002


def test_soft_labels_are_accepted_and_change_the_image():
    cfg = GANConfig(latent_dim=8, num_classes=3, ngf=8, ndf=8)
    G = Generator(cfg).eval()
    z = torch.randn(1, 8).repeat(3, 1)
    y = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 1.0, 0]])
    x = G(z, y)
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])


def test_config_is_validated():
    with pytest.raises(ValueError, match="image_size"):
        GANConfig(image_size=48)
    with pytest.raises(ValueError, match="channels"):
        GANConfig(channels=2)


def test_classifier_outputs_logits_and_features():
    logits, features = Classifier(32, 3, num_classes=5, feature_dim=20)(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5) and features.shape == (2, 20)
