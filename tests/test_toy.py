"""The toy experiments: the bilinear game's known dynamics and a real (short) 1-D GAN run."""

import json

import numpy as np
import pytest

from training import toy


def test_simultaneous_steps_spiral_out_by_the_known_factor():
    path = toy.bilinear_trajectory("simultaneous", eta=0.1, steps=50)
    norms = np.linalg.norm(path, axis=1)
    # Each simultaneous step multiplies the distance to the saddle by sqrt(1 + eta^2).
    np.testing.assert_allclose(norms[1:] / norms[:-1], np.sqrt(1.01), rtol=1e-9)


def test_alternating_steps_orbit_and_averaging_reaches_the_saddle():
    path = toy.bilinear_trajectory("alternating", eta=0.1, steps=600)
    norms = np.linalg.norm(path, axis=1)
    assert norms.max() < 2.0 and norms[-100:].min() > 0.5  # bounded, but never converges
    assert np.linalg.norm(toy.running_average(path)[-1]) < 0.1
    assert np.linalg.norm(toy.ema(path, alpha=0.02)[-1]) < 0.5


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown mode"):
        toy.bilinear_trajectory("sideways")


def test_gaussian_run_moves_towards_the_target_mean():
    result = toy.train_gaussian("adam", seed=0, cfg=toy.GaussianConfig(steps=300, eval_samples=2000))
    assert result["finite"]
    # G starts near 0; 300 Adam steps against D must already pull the samples towards mean 4.
    assert abs(result["mean"] - toy.TARGET_MEAN) < 1.5
    assert result["collapsed"] == (result["var"] < toy.COLLAPSE_VAR_RATIO * toy.TARGET_VAR)


def test_cli_writes_json_and_plots(tmp_path):
    assert toy.main(["bilinear", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bilinear.json").read_text())
    assert data["distance_to_saddle"]["simultaneous"]["raw"] > 1.4
    assert (tmp_path / "bilinear.png").stat().st_size > 10_000
