"""The registry's per-model lifecycle on real tiny ONNX models: load, start, close, swap, remove."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from modelkit import make_model_dir, read_card, reference_images, write_card

from modelformat.latent import latents_for_seeds, one_hot
from service.errors import ModelLoadError, ModelNotFound, ShuttingDown
from service.registry import FLAT_VERSION, ModelKey, Registry

SEEDS, LABELS = [3, 1, 4, 1, 5], [0, 1, 2, 0, 1]


def _feeds(model, seeds=SEEDS, labels=LABELS):
    z, _ = latents_for_seeds(seeds, model.latent_dim)
    return {"z": z, "y": one_hot(labels, model.num_classes)} if model.conditional else {"z": z}


def test_each_model_keeps_its_key_and_the_signatures_its_sessions_declare(make_settings):
    reg = Registry(make_settings())
    reg.load_all()
    m = reg.models["tiny-cgan"]
    assert m.key == ModelKey("tiny-cgan", FLAT_VERSION) and (m.name, m.version) == ("tiny-cgan", "1")
    assert sorted(m.signatures) == ["classifier", "discriminator", "generator"]
    g = m.signatures["generator"]
    assert [(t.name, t.dtype, t.shape) for t in g.inputs] == [
        ("z", "float32", (-1, 8)),
        ("y", "float32", (-1, 3)),
    ]
    assert [(t.name, t.shape) for t in g.outputs] == [("image", (-1, 1, 8, 8))]
    assert [(t.name, t.shape) for t in m.signatures["classifier"].outputs] == [
        ("logits", (-1, 3)),
        ("features", (-1, 6)),
    ]
    assert reg.models["tiny-gan"].signatures["generator"].input_names == ["z"]
    assert m.card["name"] == "tiny-cgan" and m.model_card.latent_dim == 8  # raw JSON and typed card


@pytest.mark.anyio
async def test_one_model_loads_starts_and_closes_on_its_own(make_settings, model_root):
    reg = Registry(make_settings())
    model = reg.load(ModelKey("tiny-cgan"), model_root / "tiny-cgan")
    assert not reg.models and not model.started  # loaded, not served, not running
    model.start()
    rows = await model.generator.submit(_feeds(model))
    expected = reference_images(model_root / "tiny-cgan", SEEDS, LABELS)
    np.testing.assert_allclose(np.stack(rows), expected, atol=1e-5)
    await model.close(1)
    with pytest.raises(ShuttingDown):
        model.generator.enqueue(_feeds(model))


def test_the_card_must_carry_the_name_the_layout_gives(make_settings, model_root):
    with pytest.raises(ModelLoadError, match="name 'tiny-cgan' does not match the directory name 'other'"):
        Registry(make_settings()).load(ModelKey("other"), model_root / "tiny-cgan")


@pytest.mark.anyio
async def test_swap_serves_the_new_model_at_once_and_the_old_one_finishes_its_batches(
    make_settings, tmp_path
):
    old_dir = make_model_dir(tmp_path / "models", "m", seed=0)
    new_dir = make_model_dir(tmp_path / "next", "m", seed=1)  # same name, other weights
    reg = Registry(make_settings(models_dir=tmp_path / "models", default_model="m"))
    reg.load_all()
    reg.start()
    old = reg.get("m")
    entered, release = threading.Event(), threading.Event()
    run = old.generator.run_fn

    def held(inputs):  # the old model's batch stays in flight until released
        entered.set()
        release.wait(10)
        return run(inputs)

    old.generator.run_fn = held
    in_flight = old.generator.enqueue(_feeds(old))
    queued = old.generator.enqueue(_feeds(old, [7], [2]))
    assert await asyncio.to_thread(entered.wait, 5)

    new = await asyncio.to_thread(reg.load, ModelKey("m"), new_dir)
    swap = asyncio.ensure_future(reg.swap(new, drain_timeout_s=10))
    await asyncio.sleep(0.05)
    assert reg.get("m") is new and new.started and not swap.done()  # swapped in; the old one drains
    rows = await reg.get("m").generator.submit(_feeds(new))
    np.testing.assert_allclose(np.stack(rows), reference_images(new_dir, SEEDS, LABELS), atol=1e-5)
    with pytest.raises(ShuttingDown):  # draining: no new work for the old model
        old.generator.enqueue(_feeds(old))

    release.set()
    assert await asyncio.wait_for(swap, 5) is old
    np.testing.assert_allclose(
        np.stack(in_flight.future.result()), reference_images(old_dir, SEEDS, LABELS), atol=1e-5
    )
    np.testing.assert_allclose(queued.future.result()[0], reference_images(old_dir, [7], [2])[0], atol=1e-5)
    assert not old.generator.started and all(not b.started for b in old.batchers())
    await reg.close(1)


@pytest.mark.anyio
async def test_a_swap_replaces_a_failed_model_and_remove_forgets_one(make_settings, tmp_path):
    make_model_dir(tmp_path / "models", "keep")
    bad = make_model_dir(tmp_path / "models", "m")
    card = read_card(bad)
    card["latent_dim"] = 0
    write_card(bad, card)
    reg = Registry(make_settings(models_dir=tmp_path / "models", default_model="keep"))
    reg.load_all()
    reg.start()
    assert "field 'latent_dim' = 0 is invalid" in reg.failed["m"] and not reg.ready

    fixed = make_model_dir(tmp_path / "next", "m")
    assert await reg.swap(reg.load(ModelKey("m"), fixed), drain_timeout_s=1) is None
    assert reg.ready and reg.get("m").path == fixed
    rows = await reg.get("m").generator.submit(_feeds(reg.get("m")))
    assert len(rows) == len(SEEDS)

    removed = await reg.remove("m", drain_timeout_s=1)
    assert removed is not None and not removed.started and "m" not in reg.models
    with pytest.raises(ModelNotFound):
        reg.get("m")
    assert await reg.remove("m", drain_timeout_s=1) is None
    await reg.close(1)
