"""Toy experiments that show why GANs are hard to train.

1. ``gaussian``: a generator maps uniform noise u ~ U(0, 1) to samples of N(4.0, 1.25) (the lecture
   notes' experiment). The same networks are trained with SGD, SGD with momentum and Adam over
   several seeds; we report the mean and variance of the generated distribution and flag mode
   collapse (generated variance below a quarter of the target's).
2. ``bilinear``: the game min_theta max_psi psi * theta, whose only equilibrium is the saddle point
   (0, 0). Simultaneous gradient steps spiral outwards, alternating steps orbit; averaging or an
   exponential moving average of the iterates (what we do with generator weights) reaches the
   saddle point.

Run: ``python -m training toy all --out runs/toy`` (writes JSON and PNG plots).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

TARGET_MEAN = 4.0
TARGET_VAR = 1.25
COLLAPSE_VAR_RATIO = 0.25  # generated variance below 25% of the target's counts as mode collapse

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(frozen=True)
class GaussianConfig:
    steps: int = 3000
    batch_size: int = 128
    lr_sgd: float = 1e-2  # plain SGD needs a larger step to move at all in this budget
    lr_adam: float = 1e-3
    momentum: float = 0.9
    hidden: int = 32
    eval_samples: int = 10_000


def _mlp(hidden: int, out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(1, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU()]
    layers.append(nn.Linear(hidden, 1))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


def _optimizer(name: str, params, cfg: GaussianConfig) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr_sgd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr_sgd, momentum=cfg.momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr_adam, betas=(0.5, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def train_gaussian(optimizer: str, seed: int, cfg: GaussianConfig = GaussianConfig()) -> dict:
    """Train G: U(0,1) -> R against D with the non-saturating loss; return generated statistics."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    G, D = _mlp(cfg.hidden), _mlp(cfg.hidden)
    opt_g, opt_d = _optimizer(optimizer, G.parameters(), cfg), _optimizer(optimizer, D.parameters(), cfg)
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(cfg.batch_size, 1), torch.zeros(cfg.batch_size, 1)
    std = TARGET_VAR**0.5
    for _ in range(cfg.steps):
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(u)))
        x = TARGET_MEAN + std * torch.randn(cfg.batch_size, 1, generator=gen)
        fake = G(torch.rand(cfg.batch_size, 1, generator=gen))
        loss_d = bce(D(x), ones) + bce(D(fake.detach()), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        # (2) Update G: maximize log(D(G(u))) (non-saturating)
        loss_g = bce(D(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    with torch.no_grad():
        samples = G(torch.rand(cfg.eval_samples, 1, generator=gen)).squeeze(1).numpy()
    mean, var = float(samples.mean()), float(samples.var())
    return {
        "optimizer": optimizer,
        "seed": seed,
        "mean": mean,
        "var": var,
        "collapsed": bool(var < COLLAPSE_VAR_RATIO * TARGET_VAR),
        "finite": bool(np.isfinite(mean) and np.isfinite(var)),
        "samples": samples,
    }


def gaussian_study(out: Path, seeds: int = 5, cfg: GaussianConfig = GaussianConfig()) -> dict:
    """Every optimizer x seed; writes gaussian.json and gaussian.png (histograms vs the target)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # tiny MLPs: thread hand-offs cost more than they save
    runs = [
        train_gaussian(name, seed, cfg)
        for name, seed in tqdm([(o, s) for o in OPTIMIZERS for s in range(seeds)], desc="toy gaussian")
    ]
    summary = {}
    for name in OPTIMIZERS:
        mine = [r for r in runs if r["optimizer"] == name]
        means, variances = np.array([r["mean"] for r in mine]), np.array([r["var"] for r in mine])
        summary[name] = {
            "mean": [float(means.mean()), float(means.std())],
            "var": [float(variances.mean()), float(variances.std())],
            "collapsed_runs": sum(r["collapsed"] for r in mine),
            "runs": len(mine),
        }
    result = {
        "target": {"mean": TARGET_MEAN, "var": TARGET_VAR},
        "config": asdict(cfg),
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs],
    }
    (out / "gaussian.json").write_text(json.dumps(result, indent=2))
    _plot_gaussian(runs, out / "gaussian.png")
    return result


def _plot_gaussian(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OPTIMIZERS), figsize=(4 * len(OPTIMIZERS), 3.2), sharey=True)
    grid = np.linspace(TARGET_MEAN - 4, TARGET_MEAN + 4, 200)
    density = np.exp(-((grid - TARGET_MEAN) ** 2) / (2 * TARGET_VAR)) / np.sqrt(2 * np.pi * TARGET_VAR)
    for ax, name in zip(axes, OPTIMIZERS, strict=True):
        for r in (r for r in runs if r["optimizer"] == name):
            label = f"seed {r['seed']}: m={r['mean']:.2f} v={r['var']:.2f}" + (" (collapse)" * r["collapsed"])
            ax.hist(
                r["samples"], bins=80, range=(grid[0], grid[-1]), density=True, histtype="step", label=label
            )
        ax.plot(grid, density, "k--", label="target N(4, 1.25)")
        ax.set_title(name)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the bilinear game min_theta max_psi psi * theta -------------------------------------------------


def bilinear_trajectory(mode: str, eta: float = 0.1, steps: int = 300, start=(1.0, 1.0)) -> np.ndarray:
    """Iterates (theta, psi) of gradient descent on theta / ascent on psi, shape [steps + 1, 2].

    d/dtheta (psi*theta) = psi and d/dpsi = theta. ``simultaneous`` uses the old values for both
    players (the spiral grows by sqrt(1 + eta^2) per step); ``alternating`` lets psi see the new
    theta (a bounded orbit around the saddle point).
    """
    theta, psi = start
    path = [(theta, psi)]
    for _ in range(steps):
        if mode == "simultaneous":
            theta, psi = theta - eta * psi, psi + eta * theta
        elif mode == "alternating":
            theta = theta - eta * psi
            psi = psi + eta * theta
        else:
            raise ValueError(f"unknown mode {mode!r}; choose simultaneous or alternating")
        path.append((theta, psi))
    return np.asarray(path)


def running_average(path: np.ndarray) -> np.ndarray:
    """Uniform average of the iterates so far (weight averaging)."""
    return np.cumsum(path, axis=0) / np.arange(1, len(path) + 1)[:, None]


def ema(path: np.ndarray, alpha: float = 0.02) -> np.ndarray:
    """theta_hat_{i+1} = (1 - alpha) theta_hat_i + alpha theta_{i+1}."""
    out = np.empty_like(path)
    out[0] = path[0]
    for i in range(1, len(path)):
        out[i] = (1 - alpha) * out[i - 1] + alpha * path[i]
    return out


def bilinear_study(out: Path, eta: float = 0.1, steps: int = 300) -> dict:
    """Trajectories of both update rules, raw, averaged and EMA; writes bilinear.json/.png."""
    out.mkdir(parents=True, exist_ok=True)
    curves = {}
    for mode in ("simultaneous", "alternating"):
        raw = bilinear_trajectory(mode, eta, steps)
        curves[mode] = {"raw": raw, "average": running_average(raw), "ema": ema(raw)}
    result = {
        "eta": eta,
        "steps": steps,
        "start": [1.0, 1.0],
        "distance_to_saddle": {
            mode: {kind: float(np.linalg.norm(path[-1])) for kind, path in kinds.items()}
            for mode, kinds in curves.items()
        },
    }
    (out / "bilinear.json").write_text(json.dumps(result, indent=2))
    _plot_bilinear(curves, out / "bilinear.png")
    return result


def _plot_bilinear(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (mode, kinds) in zip(axes, curves.items(), strict=True):
        for kind, style in (("raw", "-"), ("average", "--"), ("ema", ":")):
            p = kinds[kind]
            ax.plot(p[:, 0], p[:, 1], style, lw=1.2, label=f"{kind} (end |.|={np.linalg.norm(p[-1]):.2f})")
        ax.plot([0], [0], "k*", ms=10, label="saddle (0, 0)")
        ax.plot([1], [1], "ko", ms=4, label="start")
        ax.set_title(f"{mode} steps on min_theta max_psi psi*theta")
        ax.set_xlabel("theta")
        ax.set_ylabel("psi")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training toy", description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=["gaussian", "bilinear", "all"], help="which toy to run")
    parser.add_argument("--out", type=Path, default=Path("runs/toy"), help="folder for JSON and PNG results")
    parser.add_argument("--seeds", type=int, default=5, help="repeats per optimizer (gaussian)")
    parser.add_argument("--steps", type=int, default=GaussianConfig.steps, help="training steps (gaussian)")
    parser.add_argument("--eta", type=float, default=0.1, help="step size (bilinear)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.eta <= 0:
        parser.error("--seeds and --steps must be >= 1 and --eta > 0")
    if args.experiment in ("gaussian", "all"):
        result = gaussian_study(args.out, args.seeds, GaussianConfig(steps=args.steps))
        print(f"target mean {TARGET_MEAN} var {TARGET_VAR}")
        for name, s in result["summary"].items():
            print(
                f"{name:>9}: mean {s['mean'][0]:.2f} +- {s['mean'][1]:.2f}  var {s['var'][0]:.2f} +- "
                f"{s['var'][1]:.2f}  collapsed {s['collapsed_runs']}/{s['runs']}"
            )
    if args.experiment in ("bilinear", "all"):
        result = bilinear_study(args.out, args.eta)
        for mode, d in result["distance_to_saddle"].items():
            print(f"{mode:>12}: distance to saddle " + "  ".join(f"{k} {v:.3f}" for k, v in d.items()))
    print(f"wrote {args.out}")
    return 0
