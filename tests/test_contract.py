"""Both wings meet at the model directory: `training` exports a tiny GAN, `service` loads and serves it.

The same seed must give the same image in PyTorch (training's fixed latents) and through the
service's registry and batcher (its own latents), so this also holds the two wings to one latent rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelformat import read_card
from service import latent
from service.registry import Registry
from service.settings import Settings
from training.export import export_model_dir
from training.models import Classifier, Discriminator, GANConfig, Generator
from training.models import one_hot as torch_one_hot
from training.train import fixed_latents

SEEDS, LABELS = [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 0, 1, 2, 0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A conditional DCGAN after two real optimizer steps, exported to `<root>/tiny-export/`."""
    torch.manual_seed(0)
    cfg = GANConfig(image_size=28, latent_dim=8, num_classes=3, ngf=8, ndf=8)
    G, D = Generator(cfg), Discriminator(cfg)
    opt = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for _ in range(2):  # non-saturating G steps: BatchNorm statistics and weights move off their init
        z, y = torch.randn(16, 8), torch_one_hot(torch.randint(0, 3, (16,)), 3)
        loss = torch.nn.functional.softplus(-D(G(z, y), y)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    root = tmp_path_factory.mktemp("models")
    card = export_model_dir(
        root / "tiny-export",
        name="tiny-export",
        G=G,
        D=D,
        C=Classifier(28, 1, 3, feature_dim=6),
        class_names=["a", "b", "c"],
        reference_images=torch.rand(32, 1, 28, 28) * 2 - 1,
        training={"dataset": "none (tests/test_contract.py)", "steps": 2},
    )
    return root, card, G.eval()


@pytest.mark.anyio
async def test_an_exported_model_loads_in_the_service_and_makes_the_same_images(exported):
    root, card, G = exported
    assert read_card(root / "tiny-export", "tiny-export") == card  # what export wrote is what is read
    registry = Registry(Settings(models_dir=root, provider="cpu", max_batch_size=4))
    registry.load_all()
    assert not registry.failed and registry.ready
    model = registry.get("tiny-export")
    assert model.model_card == card and model.model_card.ganserve_version
    for role, signature in model.signatures.items():  # the files declare the contract's signatures
        want = card.signature(role)
        assert signature.input_names == want.input_names
        assert signature.output_names == want.output_names

    registry.start()
    try:
        z, drawn = latent.latents_for_seeds(SEEDS, model.latent_dim, model.num_classes)
        y = latent.one_hot(LABELS, model.num_classes)
        images = np.stack(await model.generator.submit({"z": z, "y": y}))  # 7 rows: split over batches of 4
        logits = np.stack(await model.discriminator.submit({"image": images, "y": y}))
        class_logits = np.stack(await model.classifier.submit({"image": images}))
    finally:
        await registry.close(1)

    assert len(drawn) == len(SEEDS)
    with torch.no_grad():
        expected = G(fixed_latents(SEEDS, 8), torch_one_hot(torch.tensor(LABELS), 3)).numpy()
    assert images.shape == (7, 1, 28, 28)
    np.testing.assert_allclose(images, expected, atol=1e-4)
    assert logits.shape == (7,) and np.isfinite(logits).all()
    assert class_logits.shape == (7, 3)
