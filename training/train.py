"""The GAN training loop: Algorithm 1 of Goodfellow et al. (2014) with the DCGAN recipe.

For each minibatch: (1) update D (k D-steps per G-step), (2) update G with the chosen objective
(non-saturating by default), then move the EMA copy of G, which is what gets exported. A run folder
holds checkpoint.pt (resumable), config.json, metrics.jsonl, samples/epoch_NNN.png and losses.png.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.data import Dataset, load_dataset, split
from training.imaging import plot_losses, save_grid
from training.losses import get_objective
from training.models import Discriminator, GANConfig, Generator, one_hot


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist"  # `mnist` (embedded), `idx:IMAGES,LABELS` or an image folder
    image_size: int = 28
    channels: int = 1
    conditional: bool = True
    latent_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    epochs: int = 25
    batch_size: int = 64
    lr: float = 2e-4  # DCGAN paper: Adam lr 2e-4
    beta1: float = 0.5  # DCGAN paper: beta1 0.9 oscillated, 0.5 is stable
    beta2: float = 0.999
    d_steps: int = 1  # k in Algorithm 1
    loss: str = "non-saturating"
    ema_decay: float = 0.999  # EMA of G's weights; warmed up as min(decay, (1 + t) / (10 + t))
    heldout_fraction: float = 0.2  # held out for the classifier's accuracy and the FID reference
    split_seed: int = 0
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def __post_init__(self):
        get_objective(self.loss)
        if self.epochs < 1 or self.batch_size < 2 or self.d_steps < 1:
            raise ValueError("epochs >= 1, batch_size >= 2 and d_steps >= 1 are required")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**values)

    def gan_config(self, num_classes: int) -> GANConfig:
        return GANConfig(
            self.image_size,
            self.channels,
            self.latent_dim,
            num_classes if self.conditional else 0,
            self.ngf,
            self.ndf,
        )


def fixed_latents(seeds, latent_dim: int) -> torch.Tensor:
    """The project's latent rule (docs/MODEL_FORMAT.md): z = default_rng(seed).standard_normal(nz)."""
    return torch.from_numpy(
        np.stack([np.random.default_rng(s).standard_normal(latent_dim).astype(np.float32) for s in seeds])
    )


def sample_grid_inputs(gan: GANConfig, num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Fixed noise for the per-epoch grids: rows = labels (same z along a column) or 8x8 seeds."""
    if gan.conditional:
        cols = 10
        z = fixed_latents(range(cols), gan.latent_dim).repeat(num_classes, 1)
        y = one_hot(torch.arange(num_classes).repeat_interleave(cols), num_classes)
        return z, y, cols
    return fixed_latents(range(64), gan.latent_dim), None, 8


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(p, 1.0 - decay)
        for be, b in zip(ema.buffers(), model.buffers(), strict=True):
            be.copy_(b)  # BN running statistics are copied, not averaged


class Trainer:
    """Holds G, D, the EMA of G, both optimizers and the RNG; one `epoch()` call trains one epoch."""

    def __init__(self, cfg: TrainConfig, data: Dataset, out: Path):
        self.cfg, self.data, self.out = cfg, data, out
        self.num_classes = len(data.class_names)
        self.gan = cfg.gan_config(self.num_classes)
        torch.manual_seed(cfg.seed)
        self.G, self.D = Generator(self.gan), Discriminator(self.gan)
        self.G_ema = copy.deepcopy(self.G).eval()
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)
        self.objective = get_objective(cfg.loss)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.epoch_done, self.step, self.g_steps = 0, 0, 0
        self.history: list[list[float]] = []  # per step: loss_d, loss_g, D(x), D(G(z))
        self.train_seconds = 0.0

    # -- one optimisation step -----------------------------------------------------------------
    def train_step(self, x: torch.Tensor, labels: torch.Tensor) -> list[float]:
        cfg, G, D = self.cfg, self.G, self.D
        y = one_hot(labels, self.num_classes) if self.gan.conditional else None
        z = torch.randn(len(x), cfg.latent_dim, generator=self.rng)
        fake = G(z, y)

        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        real_logit, fake_logit = D(x, y), D(fake.detach(), y)
        loss_d = self.objective.d_loss(real_logit, fake_logit)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.step += 1
        loss_g = float("nan")

        # (2) Update G network every k D-steps: non-saturating maximizes log(D(G(z)))
        if self.step % cfg.d_steps == 0:
            g_loss = self.objective.g_loss(D(fake, y))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            self.g_steps += 1
            decay = min(cfg.ema_decay, (1 + self.g_steps) / (10 + self.g_steps))
            update_ema(self.G_ema, G, decay)
            loss_g = g_loss.item()
        row = [
            loss_d.item(),
            loss_g,
            torch.sigmoid(real_logit).mean().item(),
            torch.sigmoid(fake_logit).mean().item(),
        ]
        self.history.append(row)
        return row

    def epoch(self, progress: tqdm | None = None) -> dict:
        self.G.train()
        self.D.train()
        n, bs = len(self.data), self.cfg.batch_size
        perm = torch.randperm(n, generator=self.rng)
        rows, start = [], time.perf_counter()
        for begin in range(0, n - bs + 1, bs):  # drop the last partial batch (BN wants full batches)
            idx = perm[begin : begin + bs]
            row = self.train_step(self.data.images[idx], self.data.labels[idx])
            rows.append(row)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(
                    loss_D=f"{row[0]:.3f}", loss_G=f"{row[1]:.3f}", D_x=f"{row[2]:.2f}", D_G_z=f"{row[3]:.2f}"
                )
        self.epoch_done += 1
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        means = np.nanmean(np.asarray(rows), axis=0) if rows else [float("nan")] * 4
        return {
            "epoch": self.epoch_done,
            "step": self.step,
            "loss_d": float(means[0]),
            "loss_g": float(means[1]),
            "d_x": float(means[2]),
            "d_g_z": float(means[3]),
            "seconds": round(seconds, 3),
        }

    # -- artefacts -----------------------------------------------------------------------------
    def save_samples(self, path: Path) -> None:
        z, y, nrow = sample_grid_inputs(self.gan, self.num_classes)
        with torch.no_grad():
            images = self.G_ema(z, y).numpy()
        save_grid(images, nrow, path)

    def state(self) -> dict:
        """Everything needed to resume, as tensors and plain containers (loads with weights_only=True)."""
        return {
            "config": asdict(self.cfg),
            "class_names": list(self.data.class_names),
            "epoch": self.epoch_done,
            "step": self.step,
            "g_steps": self.g_steps,
            "train_seconds": self.train_seconds,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
            "history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 4),
        }

    def load_state(self, state: dict) -> None:
        saved = TrainConfig.from_dict(state["config"])
        if {**asdict(saved), "epochs": 0} != {**asdict(self.cfg), "epochs": 0}:
            raise ValueError(
                "checkpoint was trained with another config (only --epochs may change on resume)"
            )
        for module, key in ((self.G, "G"), (self.D, "D"), (self.G_ema, "G_ema")):
            module.load_state_dict(state[key])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.rng.set_state(state["rng"])
        self.epoch_done, self.step, self.g_steps = state["epoch"], state["step"], state["g_steps"]
        self.train_seconds = float(state["train_seconds"])
        self.history = state["history"].tolist()


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def fake_dataset(cfg: TrainConfig, n: int = 16, num_classes: int = 10) -> Dataset:
    """Random data of the configured shape, for --dry-run."""
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1
    labels = torch.arange(n) % num_classes
    return Dataset(images, labels, tuple(str(i) for i in range(num_classes)), "fake")


def train(cfg: TrainConfig, out: Path, resume: bool = False, dry_run: bool = False) -> Trainer:
    """Train (or resume) into the run folder `out`; returns the trainer (G_ema is the result)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    if dry_run:
        data = fake_dataset(cfg, n=cfg.batch_size)
    else:
        data, _ = split(
            load_dataset(cfg.dataset, cfg.image_size, cfg.channels), cfg.heldout_fraction, cfg.split_seed
        )
    trainer = Trainer(cfg, data, out)
    ckpt = out / "checkpoint.pt"
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        trainer.load_state(load_checkpoint(ckpt))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if dry_run:
        row = trainer.train_step(data.images[: cfg.batch_size], data.labels[: cfg.batch_size])
        print(f"dry run: loss_D={row[0]:.4f} loss_G={row[1]:.4f} D(x)={row[2]:.3f} D(G(z))={row[3]:.3f}")
        return trainer
    steps_per_epoch = len(data) // cfg.batch_size
    remaining = cfg.epochs - trainer.epoch_done
    with tqdm(total=remaining * steps_per_epoch, desc=f"train {cfg.dataset}", unit="step") as progress:
        for _ in range(remaining):
            record = trainer.epoch(progress)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            trainer.save_samples(out / "samples" / f"epoch_{trainer.epoch_done:03d}.png")
            torch.save(trainer.state(), ckpt)
            plot_losses(np.asarray(trainer.history), out / "losses.png", steps_per_epoch)
    return trainer
