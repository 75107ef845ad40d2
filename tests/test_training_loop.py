"""Real optimisation steps on tiny data: finite losses, weights move, resume is exact, CLI dry run."""

import subprocess
import sys

import pytest
import torch

from training.train import TrainConfig, Trainer, fake_dataset, load_checkpoint, train

TINY = dict(latent_dim=8, ngf=8, ndf=8, batch_size=8, epochs=1, threads=1)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("loss", ["non-saturating", "minimax"])
@pytest.mark.parametrize("conditional", [True, False])
def test_one_step_gives_finite_losses_and_changes_weights(tmp_path, loss, conditional):
    cfg = TrainConfig(conditional=conditional, loss=loss, **TINY)
    data = fake_dataset(cfg, n=16, num_classes=3)
    trainer = Trainer(cfg, data)
    g0, d0, e0 = params(trainer.G), params(trainer.D), params(trainer.G_ema)
    row = trainer.train_step(data.images[:8], data.labels[:8])
    assert all(torch.isfinite(torch.tensor(row)))
    assert 0 < row[2] < 1 and 0 < row[3] < 1  # D(x), D(G(z)) are probabilities
    assert all(not torch.equal(a, b) for a, b in zip(g0, params(trainer.G), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, params(trainer.D), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(e0, params(trainer.G_ema), strict=True))


def test_k_discriminator_steps_per_generator_step(tmp_path):
    cfg = TrainConfig(d_steps=3, **TINY)
    data = fake_dataset(cfg, n=16, num_classes=3)
    trainer = Trainer(cfg, data)
    g0 = params(trainer.G)
    for _ in range(2):
        trainer.train_step(data.images[:8], data.labels[:8])
    assert all(torch.equal(a, b) for a, b in zip(g0, params(trainer.G), strict=True))
    trainer.train_step(data.images[:8], data.labels[:8])
    assert trainer.g_steps == 1 and not torch.equal(g0[0], params(trainer.G)[0])


def test_checkpoint_then_resume_gives_identical_next_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "training.train.load_dataset", lambda *a, **k: fake_dataset(TrainConfig(**TINY), n=40)
    )
    cfg = TrainConfig(heldout_fraction=0.2, **TINY)
    straight = train(TrainConfig(**{**TINY, "epochs": 2}), tmp_path / "straight")
    train(cfg, tmp_path / "resumed")
    state = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")  # weights_only=True
    assert state["epoch"] == 1
    resumed = train(TrainConfig(**{**TINY, "epochs": 2}), tmp_path / "resumed", resume=True)
    for a, b in zip(params(straight.G), params(resumed.G), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight.G_ema.state_dict().values(), resumed.G_ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    run = tmp_path / "resumed"
    assert (run / "samples" / "epoch_002.png").exists() and (run / "losses.png").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_another_config(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "training.train.load_dataset", lambda *a, **k: fake_dataset(TrainConfig(**TINY), n=40)
    )
    train(TrainConfig(**TINY), tmp_path)
    with pytest.raises(ValueError, match="another config"):
        train(TrainConfig(**{**TINY, "lr": 1e-3}), tmp_path, resume=True)


def test_unknown_loss_and_config_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown loss"):
        TrainConfig(loss="wasserstein-ish")
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"learning_rate": 1})


def test_cli_dry_run(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            "--dry-run",
            "--run",
            str(tmp_path),
            "--ngf",
            "8",
            "--ndf",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "dry run: loss_D=" in out.stdout
    assert (tmp_path / "config.json").exists()


def test_cli_help_documents_every_flag():
    out = subprocess.run(
        [sys.executable, "-m", "training", "train", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for flag in ("--preset", "--resume", "--dry-run", "--d-steps", "--loss", "--ema-decay", "--image-size"):
        assert flag in out.stdout


def test_every_config_field_has_one_help_text_and_a_flag():
    from dataclasses import fields

    from training.__main__ import build_parser

    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    for f in fields(TrainConfig):
        assert f.metadata["help"], f.name
        assert actions[f.name].help.startswith(f.metadata["help"])


def test_recorded_command_leaves_out_resume_and_out():
    from training.__main__ import _command

    argv = ["train", "--preset", "mnist-cdcgan", "--out", "x/y", "--resume", "--out=z", "--epochs", "3"]
    assert _command(argv) == "python -m training train --preset mnist-cdcgan --epochs 3"


def test_progress_bar_names_the_dataset_not_its_path(tmp_path, monkeypatch, capsys):
    data = fake_dataset(TrainConfig(**TINY), n=16)
    data = type(data)(data.images, data.labels, data.class_names, "digits")
    monkeypatch.setattr("training.train.load_dataset", lambda *a, **k: data)
    cfg = TrainConfig(**{**TINY, "dataset": "idx:/a/long/path/digits.gz,/a/long/path/labels.gz"})
    train(cfg, tmp_path)
    err = capsys.readouterr().err
    assert "train digits" in err and "/a/long/path" not in err
