"""The GAN techniques offered as training options (issue 9), each checked on real steps or known cases."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_training_data import write_idx
from torch import nn

from training.export import export_discriminator
from training.losses import OBJECTIVES, diff_augment, get_objective, gradient_penalty, r1_penalty
from training.models import Discriminator, GANConfig, MinibatchStddev
from training.train import TrainConfig, Trainer, fake_dataset

TINY = dict(latent_dim=8, ngf=8, ndf=8, batch_size=8, epochs=1, threads=1)


def trainer_for(tmp_path, **options):
    cfg = TrainConfig(**{**TINY, **options})
    return Trainer(cfg, fake_dataset(cfg, n=16, num_classes=3))


@pytest.mark.parametrize("loss", sorted(OBJECTIVES))
def test_every_objective_takes_a_finite_step(tmp_path, loss):
    t = trainer_for(tmp_path, loss=loss, d_norm="none" if loss == "wgan-gp" else "batch")
    row = t.train_step(t.data.images[:8], t.data.labels[:8])
    assert np.isfinite(row[:2]).all()


def test_wgan_clips_the_critic_weights(tmp_path):
    t = trainer_for(tmp_path, loss="wgan", clip_value=0.005, lr=0.1)
    t.train_step(t.data.images[:8], t.data.labels[:8])
    assert max(p.abs().max().item() for p in t.D.parameters()) <= 0.005 + 1e-9


def test_gradient_penalty_of_a_linear_critic_is_known():
    class Linear(nn.Module):
        def forward(self, x, y=None):
            return (x * 2.0).flatten(1).sum(1)  # gradient 2 everywhere: norm = 2 * sqrt(D)

    x = torch.zeros(4, 1, 2, 2)
    gp = gradient_penalty(Linear(), x, x + 1, None, torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((2 * 2 - 1) ** 2)


def test_r1_penalty_of_a_linear_critic_is_known():
    x = torch.zeros(3, 1, 2, 2, requires_grad=True)
    logit = (x * 3.0).flatten(1).sum(1)  # gradient 3 at each of 4 pixels: squared norm 36
    assert r1_penalty(logit, x).item() == pytest.approx(36.0)


def test_r1_and_ttur_change_the_discriminator_step_only_as_asked(tmp_path):
    base = trainer_for(tmp_path)
    r1 = trainer_for(tmp_path, r1_weight=10.0)
    assert r1.opt_d.param_groups[0]["lr"] == base.opt_d.param_groups[0]["lr"] == 2e-4
    assert trainer_for(tmp_path, lr_d=4e-4).opt_d.param_groups[0]["lr"] == 4e-4
    rows = [t.train_step(t.data.images[:8], t.data.labels[:8]) for t in (base, r1)]
    assert rows[1][0] > rows[0][0]  # same weights and batch: the penalty adds to D's loss
    assert np.isfinite(rows[1][:2]).all()


def test_diff_augment_moves_and_blanks_whole_images_and_is_differentiable():
    x = -torch.ones(16, 1, 28, 28)
    x[:, :, 12:16, 12:16] = 1.0  # a 4x4 white square in the middle
    gen = torch.Generator().manual_seed(0)
    moved = diff_augment(x, ("translation",), gen)
    assert ((moved > 0).sum(dim=(1, 2, 3)) == 16).all()  # +-4 px keeps the square inside
    assert not torch.equal(moved, x) and set(moved.unique().tolist()) == {-1.0, 1.0}
    cut = diff_augment(x, ("cutout",), gen)
    assert (cut <= x).all() and ((cut == -1).sum(dim=(1, 2, 3)) >= 784 - 16).all()
    y = x.clone().requires_grad_(True)
    diff_augment(y, ("translation", "cutout"), gen).sum().backward()
    assert y.grad is not None and y.grad.sum() > 0
    t = trainer_for(None, augment="translation,cutout")
    assert np.isfinite(t.train_step(t.data.images[:8], t.data.labels[:8])[:2]).all()
    with pytest.raises(ValueError, match="unknown augment"):
        TrainConfig(augment="flip")


def test_hinge_and_label_smoothing_known_values():
    hinge = get_objective("hinge")
    assert hinge.d_loss(torch.tensor([2.0]), torch.tensor([-2.0]), 0.0).item() == 0.0
    assert hinge.d_loss(torch.tensor([0.0]), torch.tensor([0.0]), 0.0).item() == 2.0
    ns = get_objective("non-saturating")
    sure = ns.d_loss(torch.tensor([20.0]), torch.tensor([-20.0]), 0.0).item()
    smoothed = ns.d_loss(torch.tensor([20.0]), torch.tensor([-20.0]), 0.1).item()
    assert sure < 1e-6 and smoothed == pytest.approx(0.1 * 20.0, rel=1e-3)  # s * softplus(20)
    with pytest.raises(ValueError, match="cross-entropy"):
        TrainConfig(loss="hinge", label_smoothing=0.1)


def test_spectral_norm_keeps_the_largest_singular_value_near_one():
    torch.manual_seed(0)
    D = Discriminator(GANConfig(num_classes=0, ngf=8, ndf=8, spectral_norm=True, d_norm="none")).train()
    with torch.no_grad():
        D.psi.parametrizations.weight.original.mul_(50)  # a big raw weight...
        for _ in range(30):  # ...power iterations run once per training forward pass
            D(torch.randn(4, 1, 28, 28))
    assert torch.linalg.matrix_norm(D.psi.weight, ord=2).item() == pytest.approx(1.0, abs=0.02)


def test_spectral_norm_discriminator_exports_with_parity(tmp_path):
    D = Discriminator(GANConfig(num_classes=3, ngf=8, ndf=8, spectral_norm=True, d_norm="none"))
    D.train()(torch.randn(4, 1, 28, 28), torch.eye(3)[[0, 1, 2, 0]])  # one power iteration
    assert export_discriminator(D.eval(), tmp_path / "d.onnx") <= 1e-4


def test_minibatch_stddev_adds_a_channel_that_sees_batch_variety():
    same = torch.ones(4, 3, 5, 5)
    out = MinibatchStddev()(same)
    assert out.shape == (4, 4, 5, 5) and out[:, 3].abs().max() == 0
    varied = MinibatchStddev()(torch.randn(4, 3, 5, 5))
    assert varied[:, 3].min() > 0
    D = Discriminator(GANConfig(num_classes=0, ngf=8, ndf=8, minibatch_stddev=True))
    assert D(torch.randn(3, 1, 28, 28)).shape == (3,)


def test_extra_discriminator_layers_deepen_d_and_export_with_parity(tmp_path):
    def convs(cfg):
        return sum(isinstance(m, nn.Conv2d) for m in Discriminator(cfg).modules())

    base = dict(num_classes=3, ngf=8, ndf=8, minibatch_stddev=True)
    assert convs(GANConfig(**base, d_extra_layers=2)) == convs(GANConfig(**base)) + 2
    D = Discriminator(GANConfig(**base, d_extra_layers=2))
    D.train()(torch.randn(4, 1, 28, 28), torch.eye(3)[[0, 1, 2, 0]])  # move the BN statistics
    assert export_discriminator(D.eval(), tmp_path / "d.onnx") <= 1e-4
    with pytest.raises(ValueError, match="d_extra_layers"):
        GANConfig(d_extra_layers=-1)


def test_mode_seeking_pairs_share_labels_and_add_the_msgan_term(tmp_path):
    """G's loss gains w / (mean|G(z1)-G(z2)| / mean|z1-z2|) over pairs (i, i+half) of one label."""
    seen = {}

    def step(weight):
        t = trainer_for(tmp_path, mode_seeking=weight)
        forward = t.G.forward

        def spy(z, y=None):
            seen.update(z=z.detach(), y=y.detach(), fake=forward(z, y).detach())
            return forward(z, y)

        t.G.forward = spy
        labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        return t.train_step(t.data.images[:8], labels)[1]

    one, two = step(1.0), step(2.0)  # same seed: same D step, same fakes; only the term's weight differs
    z, y, fake = seen["z"], seen["y"], seen["fake"]
    assert torch.equal(y[:4], y[4:])  # the pairs share their label
    ratio = (fake[:4] - fake[4:]).abs().mean() / (z[:4] - z[4:]).abs().mean()
    assert two - one == pytest.approx(1.0 / (ratio.item() + 1e-5), rel=1e-4)
    with pytest.raises(ValueError, match="mode_seeking"):
        TrainConfig(mode_seeking=-1.0)


def test_acgan_trains_an_auxiliary_classifier(tmp_path):
    t = trainer_for(tmp_path, conditioning="acgan")
    assert t.D.embed is None and t.D.aux is not None
    before = t.D.aux.weight.detach().clone()
    t.train_step(t.data.images[:8], t.data.labels[:8])
    assert not torch.equal(before, t.D.aux.weight)
    with pytest.raises(ValueError, match="acgan needs a conditional"):
        TrainConfig(conditioning="acgan", conditional=False)


def test_weight_average_is_the_mean_of_the_last_n_generators(tmp_path):
    t = trainer_for(tmp_path, weight_average=2, export_weights="average", epochs=2)  # 2 steps per epoch
    assert t.total_g_steps == 4
    seen = []
    for _ in range(4):
        t.train_step(t.data.images[:8], t.data.labels[:8])
        seen.append([p.detach().clone() for p in t.G.parameters()])
    for i, p in enumerate(t.exported_generator().parameters()):
        torch.testing.assert_close(p, (seen[2][i] + seen[3][i]) / 2)
    ema = [p.detach() for p in t.G_ema.parameters()]
    assert not torch.equal(ema[0], seen[3][0])  # the EMA lags the raw weights


def test_torchrun_two_cpu_ranks_end_with_identical_weights(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "images", rng.integers(0, 256, (32, 28, 28)), gz=False)
    write_idx(tmp_path / "labels", np.arange(32) % 2, gz=False)
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import torch, torch.distributed as dist
            from pathlib import Path
            from training.train import TrainConfig, train
            cfg = TrainConfig(dataset="idx:{tmp_path / "images"},{tmp_path / "labels"}", latent_dim=8, ngf=8,
                              ndf=8, batch_size=8, epochs=2, threads=1, heldout_fraction=0.25)
            t = train(cfg, Path("{tmp_path / "run"}"))
            state = {{**{{"G." + k: v for k, v in t.G.state_dict().items()}},
                      **{{"D." + k: v for k, v in t.D.state_dict().items()}},
                      **{{"E." + k: v for k, v in t.G_ema.state_dict().items()}}}}
            torch.save(state, "{tmp_path}/rank%d.pt" % dist.get_rank())
            dist.destroy_process_group()
            """
        )
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}  # loopback: no network here
    # own process group, so a hang kills the ranks too, not only the launcher
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # SIGTERM lets torchrun stop its workers (each in its own session)
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "run" / "checkpoint.pt").exists()  # rank 0 wrote the run folder


def test_study_variants_are_valid_configs():
    from dataclasses import replace

    from training.study import BASE, VARIANTS

    assert len(VARIANTS) >= 8
    for _, overrides in VARIANTS.values():
        replace(BASE, **overrides)  # raises on an invalid combination
    replace(BASE, conditional=False, **VARIANTS["ns + DiffAug"][1])


def test_study_trains_for_a_wall_clock_budget(tmp_path):
    import json
    import time

    from training.study import train_for

    cfg = TrainConfig(**TINY)
    start = time.perf_counter()
    t = train_for(cfg, tmp_path, 0.5, fake_dataset(cfg, n=16, num_classes=3))
    assert 0.5 <= t.train_seconds < time.perf_counter() - start + 1e-6
    assert t.step > 2  # more than one epoch of 2 steps: it loops over the data
    assert (tmp_path / "samples" / "final.png").exists()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(r["loss_d"]) for r in rows)
