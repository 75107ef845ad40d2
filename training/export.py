"""Export a trained run to a model directory (docs/MODEL_FORMAT.md) and check ONNX parity.

Each network is exported as one self-contained ONNX file with a dynamic batch axis, named after the
contract's signature (`modelformat.signatures`), then opened in ONNX Runtime: a file whose inputs or
outputs break the signature, or that differs from PyTorch by more than 1e-4 at batch 1, 7 or 64,
fails the export. The card is a `modelformat.ModelCard`, written with its checksums last.
"""

from __future__ import annotations

import copy
import subprocess
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from modelformat import ModelCard, Signature, check_signature, write_card
from modelformat.metrics import save_reference_stats
from modelformat.signatures import classifier_signature, discriminator_signature, generator_signature
from training.imaging import save_grid
from training.models import Classifier, Discriminator, Generator, one_hot
from training.train import sample_grid_inputs

PARITY_BATCHES = (1, 7, 64)
PARITY_TOLERANCE = 1e-4


class _GeneratorGraph(nn.Module):
    def __init__(self, g: Generator):
        super().__init__()
        self.g = g

    def forward(self, z, y=None):
        return self.g(z, y)


class _FastGeneratorGraph(nn.Module):
    """G as exported: its first layer (and the BatchNorm after it) as one matrix product.

    Why: the first layer is a ConvTranspose on a 1x1 input, which ONNX Runtime's CPU kernel runs
    as one matrix-vector product per image, reading the whole weight once per image; the same
    arithmetic as one Gemm over the batch took 10-23% less CPU per image on the shipped 28 px
    generator (docs/BENCHMARKS.md). The export is checked against the plain G (`_GeneratorGraph`).
    """

    def __init__(self, g: Generator):
        super().__init__()
        self.conditional = g.cfg.conditional
        first, bn = g.main[0], g.main[1]
        cin, cout, kh, kw = first.weight.shape
        with torch.no_grad():
            w = first.weight.detach().reshape(cin, cout, kh * kw)  # [in, out channel, position]
            b = torch.zeros(cout) if first.bias is None else first.bias.detach()
            if isinstance(bn, nn.BatchNorm2d):  # eval mode: a per-channel scale and shift
                scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                w = w * scale[None, :, None]
                b = (b - bn.running_mean) * scale + bn.bias.detach()
            self.first = nn.Linear(cin, cout * kh * kw)
            self.first.weight.copy_(w.reshape(cin, -1).T)
            self.first.bias.copy_(b.repeat_interleave(kh * kw))
        self.shape = (cout, kh, kw)
        self.rest = g.main[2:] if isinstance(bn, nn.BatchNorm2d) else g.main[1:]

    def forward(self, z, y=None):
        if self.conditional:
            z = torch.cat([z, y], dim=1)
        return self.rest(self.first(z).reshape(-1, *self.shape))


class _ClassifierGraph(nn.Module):
    def __init__(self, c: Classifier):
        super().__init__()
        self.c = c

    def forward(self, image):
        return self.c(image)


def export_onnx(module: nn.Module, inputs: dict[str, torch.Tensor], outputs: list[str], path: Path) -> None:
    """One self-contained file, batch axis dynamic (exported with batch >= 2 so it is not baked in)."""
    module.eval()
    batch = torch.export.Dim("N", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=outputs,
            dynamic_shapes=tuple({0: batch} for _ in inputs),
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def check_parity(module: nn.Module, make_inputs, path: Path, signature: Signature) -> float:
    """Max abs difference between PyTorch and ONNX Runtime over PARITY_BATCHES; raises above
    tolerance, or when the file does not declare the contract's `signature`."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    problems = check_signature(signature, Signature.of_session(session))
    if problems:
        raise RuntimeError(f"{path.name}: " + "; ".join(problems))
    worst = 0.0
    for n in PARITY_BATCHES:
        inputs = make_inputs(n)
        with torch.no_grad():
            expected = module(*inputs.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        for e, g in zip(expected, got, strict=True):
            if tuple(e.shape) != g.shape:
                raise RuntimeError(
                    f"{path.name}: shape {g.shape} from ONNX Runtime, {tuple(e.shape)} from PyTorch"
                )
            worst = max(worst, float(np.abs(e.numpy() - g).max()))
    if worst > PARITY_TOLERANCE:
        raise RuntimeError(
            f"{path.name}: ONNX Runtime differs from PyTorch by {worst:.2e} > {PARITY_TOLERANCE}"
        )
    return worst


def _image_shape(cfg) -> tuple[int, int, int]:
    return (cfg.channels, cfg.image_size, cfg.image_size)


def export_generator(G: Generator, path: Path) -> float:
    cfg, gen = G.cfg, torch.Generator().manual_seed(0)
    sig = generator_signature(cfg.latent_dim, cfg.num_classes, _image_shape(cfg))

    def make(n):
        tensors = [torch.randn(n, cfg.latent_dim, generator=gen)]
        if cfg.conditional:
            tensors.append(one_hot(torch.randint(0, cfg.num_classes, (n,), generator=gen), cfg.num_classes))
        return dict(zip(sig.input_names, tensors, strict=True))

    export_onnx(_FastGeneratorGraph(G).eval(), make(2), sig.output_names, path)
    return check_parity(_GeneratorGraph(G).eval(), make, path, sig)


def export_discriminator(D: Discriminator, path: Path) -> float:
    cfg, gen = D.cfg, torch.Generator().manual_seed(1)
    sig = discriminator_signature(cfg.num_classes, _image_shape(cfg))

    def make(n):
        tensors = [torch.rand(n, *_image_shape(cfg), generator=gen) * 2 - 1]
        if cfg.conditional:
            tensors.append(one_hot(torch.randint(0, cfg.num_classes, (n,), generator=gen), cfg.num_classes))
        return dict(zip(sig.input_names, tensors, strict=True))

    if cfg.spectral_norm:  # bake the normalised weights in; the graph needs no power iteration
        D = copy.deepcopy(D)
        for module in D.modules():
            if nn.utils.parametrize.is_parametrized(module, "weight"):
                nn.utils.parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    graph = _GeneratorGraph(D).eval()  # same (x, y=None) calling convention
    export_onnx(graph, make(2), sig.output_names, path)
    return check_parity(graph, make, path, sig)


def export_classifier(C: Classifier, path: Path) -> float:
    gen = torch.Generator().manual_seed(2)
    sig = classifier_signature(C.image_shape, C.head[-1].out_features)

    def make(n):
        return dict(zip(sig.input_names, [torch.rand(n, *C.image_shape, generator=gen) * 2 - 1], strict=True))

    graph = _ClassifierGraph(C).eval()
    export_onnx(graph, make(2), sig.output_names, path)
    return check_parity(graph, make, path, sig)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_model_dir(
    out: Path,
    *,
    name: str,
    G: Generator,
    D: Discriminator,
    C: Classifier,
    class_names: list[str],
    reference_images: torch.Tensor,
    training: dict,
    description: str = "",
    version: str = "1.0.0",
) -> ModelCard:
    """Write generator/discriminator/classifier ONNX, reference stats, samples and the card."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.onnx.data"):
        stale.unlink()
    cfg = G.cfg
    parity = {
        "generator": export_generator(G.eval(), out / "generator.onnx"),
        "discriminator": export_discriminator(D.eval(), out / "discriminator.onnx"),
        "classifier": export_classifier(C.eval(), out / "classifier.onnx"),
    }
    with torch.no_grad():
        _, features = C.eval()(reference_images)
    save_reference_stats(out / "reference_stats.npz", features.numpy())
    z, y, nrow = sample_grid_inputs(cfg, len(class_names))
    with torch.no_grad():
        save_grid(G(z, y).numpy(), nrow, out / "samples.png")
    card = ModelCard(
        format_version=1,
        name=name,
        version=version,
        description=description,
        kind="conditional" if cfg.conditional else "unconditional",
        latent_dim=cfg.latent_dim,
        num_classes=cfg.num_classes,
        class_names=list(class_names),
        image_shape=_image_shape(cfg),
        value_range=(-1.0, 1.0),
        files={
            "generator": "generator.onnx",
            "discriminator": "discriminator.onnx",
            "classifier": "classifier.onnx",
            "reference_stats": "reference_stats.npz",
            "samples": "samples.png",
        },
        training={**training, "git_commit": git_commit(), "onnx_parity_max_abs_diff": parity},
    )
    return write_card(out, card)
