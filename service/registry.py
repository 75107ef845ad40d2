"""Model directories -> validated, loaded, warmed ONNX Runtime sessions behind batchers.

Why here: the contract in docs/MODEL_FORMAT.md is enforced in one place. Every failure names the
file and the problem (`mnist-cdcgan/generator.onnx: checksum mismatch ...`); a bad directory is
logged and listed as failed and never takes the other models down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from . import metrics
from .batcher import Batcher
from .errors import ModelLoadError, ModelNotFound, ModelUnavailable
from .settings import PREFERRED_DEFAULT_MODEL, Settings

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KINDS = ("conditional", "unconditional")
ROLES = ("generator", "discriminator", "classifier", "reference_stats", "samples")
# role -> (input names, output names); `y` is added for conditional models.
SIGNATURES = {
    "generator": (["z"], ["image"]),
    "discriminator": (["image"], ["logit"]),
    "classifier": (["image"], ["logits", "features"]),
}


def valid_name(name: str) -> bool:
    """Model names are plain identifiers: no path separators, no '..', no leading dot."""
    return bool(NAME_RE.match(name)) and ".." not in name


@dataclass
class Model:
    """A loaded model: its card, sessions (behind batchers) and reference statistics."""

    name: str
    path: Path
    card: dict[str, Any]
    provider: str
    generator: Batcher
    discriminator: Batcher | None = None
    classifier: Batcher | None = None
    reference: dict[str, np.ndarray] | None = None

    @property
    def kind(self) -> str:
        return self.card["kind"]

    @property
    def conditional(self) -> bool:
        return self.card["kind"] == "conditional"

    @property
    def latent_dim(self) -> int:
        return self.card["latent_dim"]

    @property
    def num_classes(self) -> int:
        return self.card["num_classes"]

    @property
    def class_names(self) -> list[str]:
        return self.card["class_names"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.card["image_shape"])

    def batchers(self) -> list[Batcher]:
        return [b for b in (self.generator, self.discriminator, self.classifier) if b is not None]


@dataclass
class Registry:
    settings: Settings
    models: dict[str, Model] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    loaded: bool = False

    @property
    def default_name(self) -> str | None:
        s = self.settings.default_model
        if s:
            return s
        if PREFERRED_DEFAULT_MODEL in self.models:
            return PREFERRED_DEFAULT_MODEL
        return min(self.models) if self.models else None

    def get(self, name: str | None) -> Model:
        if name is None:
            name = self.default_name
            if name is None:
                raise ModelNotFound("no model is loaded (see GET /models)", field="model")
        if name in self.models:
            return self.models[name]
        if name in self.failed:
            raise ModelUnavailable(f"model {name!r} failed to load: {self.failed[name]}", field="model")
        raise ModelNotFound(f"unknown model {name!r}; see GET /models", field="model")

    @property
    def ready(self) -> bool:
        return self.loaded and bool(self.models) and not self.failed

    # --- loading ------------------------------------------------------------------------------

    def load_all(self) -> None:
        """Discover and load every model directory (blocking; call from a thread)."""
        root = Path(self.settings.models_dir)
        if not root.is_dir():
            log.warning("models directory %s does not exist: serving no models", root)
        else:
            providers = choose_providers(self.settings.provider)
            log.info(
                "ONNX Runtime providers requested: %s", [p if isinstance(p, str) else p[0] for p in providers]
            )
            for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
                try:
                    model = load_model(path, self.settings, providers)
                except ModelLoadError as exc:
                    log.error("model %s not loaded: %s", path.name, exc)
                    self.failed[path.name] = str(exc)
                except Exception as exc:  # never let one directory take the others down
                    log.exception("model %s not loaded", path.name)
                    self.failed[path.name] = f"{path.name}: {type(exc).__name__}: {exc}"
                else:
                    self.models[model.name] = model
                    metrics.MODEL_INFO.labels(model.name, model.provider, model.kind).set(1)
                    log.info("model %s loaded (%s, %s)", model.name, model.kind, model.provider)
        if self.settings.default_model and self.settings.default_model not in self.models:
            log.warning("default model %r is not loaded", self.settings.default_model)
        self.loaded = True

    def start(self) -> None:
        for model in self.models.values():
            for b in model.batchers():
                b.start()

    async def close(self, drain_timeout_s: float) -> None:
        for model in self.models.values():
            for b in model.batchers():
                await b.close(drain_timeout_s)


def choose_providers(preference: str) -> list:
    """CUDA (with heuristic conv algorithm search: no per-shape benchmarking) when listed, else CPU."""
    available = ort.get_available_providers()
    if preference != "cpu" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]
    if preference == "cuda":
        log.warning("provider 'cuda' requested but onnxruntime lists only %s; using CPU", available)
    return ["CPUExecutionProvider"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_card(path: Path) -> dict[str, Any]:
    """Parse and check model.json; returns the card. Raises ModelLoadError naming the problem."""
    where = f"{path.name}/model.json"
    card_path = path / "model.json"
    if not card_path.is_file():
        raise ModelLoadError(f"{where}: missing")
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(card, dict):
        raise ModelLoadError(f"{where}: must be a JSON object")

    def need(key, typ, check=lambda v: True, what=""):
        if key not in card:
            raise ModelLoadError(f"{where}: missing field {key!r}")
        v = card[key]
        if not isinstance(v, typ) or isinstance(v, bool) or not check(v):
            raise ModelLoadError(f"{where}: field {key!r} = {v!r} is invalid{what}")
        return v

    need("format_version", int, lambda v: v == 1, " (this service reads format_version 1)")
    name = need("name", str)
    if name != path.name:
        raise ModelLoadError(f"{where}: name {name!r} does not match the directory name {path.name!r}")
    if not valid_name(name):
        raise ModelLoadError(f"{where}: name {name!r} is not a plain identifier")
    kind = need("kind", str, lambda v: v in KINDS, f" (one of {KINDS})")
    need("latent_dim", int, lambda v: 1 <= v <= 4096)
    k = need("num_classes", int, lambda v: v >= 0)
    names = need("class_names", list, lambda v: all(isinstance(x, str) for x in v))
    shape = need("image_shape", list, lambda v: len(v) == 3 and all(isinstance(x, int) and x > 0 for x in v))
    if shape[0] not in (1, 3):
        raise ModelLoadError(f"{where}: image_shape {shape} must have 1 or 3 channels")
    if kind == "conditional" and (k < 1 or len(names) != k):
        raise ModelLoadError(
            f"{where}: a conditional model needs num_classes >= 1 and len(class_names) == num_classes"
        )
    if kind == "unconditional" and k != 0:
        raise ModelLoadError(f"{where}: an unconditional model must have num_classes 0")
    files = need("files", dict)
    for role, fname in files.items():
        if role not in ROLES:
            raise ModelLoadError(f"{where}: unknown role {role!r} in files")
        if (
            not isinstance(fname, str)
            or "/" in fname
            or "\\" in fname
            or fname in ("", ".", "..")
            or ".." in fname
        ):
            raise ModelLoadError(f"{where}: files.{role} = {fname!r} must be a plain file name")
    if "generator" not in files:
        raise ModelLoadError(f"{where}: files.generator is required")
    checksums = need("checksums", dict)
    for role, fname in files.items():
        fpath = path / fname
        if not fpath.is_file():
            raise ModelLoadError(f"{path.name}/{fname}: missing (listed as files.{role})")
        expected = checksums.get(fname)
        if not isinstance(expected, str):
            raise ModelLoadError(f"{where}: no checksum for {fname}")
        actual = _sha256(fpath)
        if actual.lower() != expected.lower():
            raise ModelLoadError(
                f"{path.name}/{fname}: checksum mismatch (model.json {expected}, file {actual})"
            )
    return card


def _check_signature(sess: ort.InferenceSession, where: str, role: str, card: dict) -> None:
    ins, outs = SIGNATURES[role]
    ins = list(ins)
    if card["kind"] == "conditional" and role in ("generator", "discriminator"):
        ins.append("y")
    got_in = {i.name: i for i in sess.get_inputs()}
    got_out = {o.name: o for o in sess.get_outputs()}
    if sorted(got_in) != sorted(ins):
        raise ModelLoadError(f"{where}: inputs {sorted(got_in)}, the contract needs {sorted(ins)}")
    missing = [o for o in outs if o not in got_out]
    if missing:
        raise ModelLoadError(f"{where}: outputs {sorted(got_out)} lack {missing}")
    expected = {
        "z": [card["latent_dim"]],
        "y": [card["num_classes"]],
        "image": list(card["image_shape"]),
    }
    for name, arg in got_in.items():
        if arg.type != "tensor(float)":
            raise ModelLoadError(f"{where}: input {name!r} is {arg.type}, the contract needs tensor(float)")
        shape = list(arg.shape)
        if len(shape) != 1 + len(expected[name]):
            raise ModelLoadError(
                f"{where}: input {name!r} has shape {shape}, expected [N, *{expected[name]}]"
            )
        if isinstance(shape[0], int) and shape[0] > 0:
            raise ModelLoadError(
                f"{where}: input {name!r} has a fixed batch size {shape[0]}; it must be dynamic"
            )
        for got, want in zip(shape[1:], expected[name], strict=True):
            if isinstance(got, int) and got > 0 and got != want:
                raise ModelLoadError(
                    f"{where}: input {name!r} has shape {shape}, expected [N, *{expected[name]}]"
                )


def _session(
    path: Path, settings: Settings, providers: list, threads: int | None = None
) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.intra_op_threads if threads is None else threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads is not None:  # the solo session: its pool must not spin between calls
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:
        raise ModelLoadError(f"{path.parent.name}/{path.name}: ONNX Runtime cannot load it ({exc})") from exc


def _solo_threads(settings: Settings, provider: str) -> int:
    """Threads of the second (solo) CPU session; 0 or 1 = none."""
    if not provider.startswith("CPU"):
        return 0
    cores = os.cpu_count() or 1
    n = settings.solo_intra_op_threads or cores
    shared = settings.intra_op_threads or cores  # 0: ORT's default, every core already
    return n if n > shared else 0


SOLO_MAX_ROWS = 16  # at n=16, c=16 (batches of 64) solo calls took 2-3% of the CPU on a third thread


def _runner(
    sess: ort.InferenceSession,
    output_names: list[str],
    pad_to: int = 0,
    solo: ort.InferenceSession | None = None,
):
    """The batcher's run function.

    `solo`: a session with more threads, used by a call of at most SOLO_MAX_ROWS rows that finds no
    other call in flight (a large batch means load: its neighbours would fight for the cores). Why:
    on the CPU one thread per call and `inference_threads` calls at once make the most images/s
    under load, but a lone request (concurrency 1) then leaves cores idle; with two threads a
    batch of one takes ~0.45 ms instead of ~0.85 here. Thread count does not change a bit of the
    output (the kernels split rows, not sums: tested), so images stay independent of timing.

    `pad_to`: every call gets that many rows (zeros appended). Why: on CUDA, cuDNN picks
    convolution kernels by input shape, so one row's pixels could change with the size of the
    batch it happened to share (seen on an H100: a seed differed alone and in a batch of 64). One
    shape for every call makes the images depend only on the seed, label and model.
    """
    lock = threading.Lock()
    inflight = 0

    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        nonlocal inflight
        with lock:
            alone = inflight == 0 and len(next(iter(inputs.values()))) <= SOLO_MAX_ROWS
            inflight += 1
        try:
            return (solo if solo is not None and alone else sess).run(output_names, inputs)
        finally:
            with lock:
                inflight -= 1

    if not pad_to:
        return run

    def run_padded(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = len(next(iter(inputs.values())))
        if rows >= pad_to:
            return run(inputs)
        padded = {
            k: np.concatenate([v, np.zeros((pad_to - rows, *v.shape[1:]), v.dtype)])
            for k, v in inputs.items()
        }
        return [out[:rows] for out in run(padded)]

    return run_padded


def load_model(path: Path, settings: Settings, providers: list) -> Model:
    """Validate, load and warm one model directory (raises ModelLoadError)."""
    card = read_card(path)
    name = card["name"]
    files = card["files"]
    sessions = {}
    for role in ("generator", "discriminator", "classifier"):
        if role in files:
            where = f"{name}/{files[role]}"
            sess = _session(path / files[role], settings, providers)
            _check_signature(sess, where, role, card)
            sessions[role] = sess
    provider = sessions["generator"].get_providers()[0]
    solo_threads = _solo_threads(settings, provider)
    solo = {
        role: _session(path / files[role], settings, providers, threads=solo_threads)
        for role in sessions
        if solo_threads
    }
    reference = None
    if "reference_stats" in files:
        reference = _read_reference(path / files["reference_stats"], f"{name}/{files['reference_stats']}")
    batch_kw = dict(
        max_batch_size=settings.max_batch_size,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        max_queue_rows=settings.max_queue_rows,
        inference_threads=settings.inference_threads,
        timeout_s=settings.request_timeout_s,
    )
    outs = {role: SIGNATURES[role][1] for role in sessions}
    pad = settings.pad_batches == "on" or (settings.pad_batches == "auto" and provider.startswith("CUDA"))
    pad_to = settings.max_batch_size if pad else 0
    batchers = {
        role: Batcher(
            f"{name}:{role}" if role != "generator" else name,
            _runner(sess, outs[role], pad_to, solo.get(role)),
            model=name if role == "generator" else f"{name}:{role}",
            **batch_kw,
        )
        for role, sess in sessions.items()
    }
    model = Model(
        name=name,
        path=path,
        card=card,
        provider=provider,
        generator=batchers["generator"],
        discriminator=batchers.get("discriminator"),
        classifier=batchers.get("classifier"),
        reference=reference,
    )
    if settings.warmup:
        _warm_up(model, settings.max_batch_size)
    return model


def _read_reference(path: Path, where: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            ref = {k: np.asarray(data[k]) for k in ("mu", "sigma", "n")}
    except KeyError as exc:
        raise ModelLoadError(f"{where}: missing array {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(f"{where}: not a readable .npz ({exc})") from exc
    f = ref["mu"].shape
    if len(f) != 1 or ref["sigma"].shape != (f[0], f[0]):
        raise ModelLoadError(
            f"{where}: mu {ref['mu'].shape} and sigma {ref['sigma'].shape} must be [F] and [F, F]"
        )
    return ref


def _warm_up(model: Model, max_batch_size: int) -> None:
    """Run every session at batch 1 and at the largest batch once; check the output shapes."""
    c = model.card
    for n in sorted({1, min(max_batch_size, 64)}):
        z = np.zeros((n, c["latent_dim"]), np.float32)
        feeds = {"z": z}
        y = None
        if model.conditional:
            y = np.zeros((n, c["num_classes"]), np.float32)
            y[:, 0] = 1
            feeds["y"] = y
        where = f"{model.name}/{c['files']['generator']}"
        try:
            (image,) = model.generator.run_fn(feeds)[:1]
        except Exception as exc:
            raise ModelLoadError(f"{where}: warm-up run failed ({exc})") from exc
        if list(image.shape) != [n, *c["image_shape"]]:
            raise ModelLoadError(
                f"{where}: output image has shape {list(image.shape)}, expected {[n, *c['image_shape']]}"
            )
        if model.discriminator is not None:
            logit = model.discriminator.run_fn({"image": image} | ({"y": y} if y is not None else {}))[0]
            if logit.shape != (n,):
                raise ModelLoadError(
                    f"{model.name}/{c['files']['discriminator']}: logit shape {logit.shape}, expected ({n},)"
                )
        if model.classifier is not None:
            logits, feats = model.classifier.run_fn({"image": image})
            if logits.shape != (n, len(c["class_names"])):
                raise ModelLoadError(
                    f"{model.name}/{c['files']['classifier']}: logits shape {logits.shape}, "
                    f"expected ({n}, {len(c['class_names'])})"
                )
            if model.reference is not None and feats.shape[1] != model.reference["mu"].shape[0]:
                raise ModelLoadError(
                    f"{model.name}/{c['files']['reference_stats']}: "
                    f"{model.reference['mu'].shape[0]} features, "
                    f"the classifier gives {feats.shape[1]}"
                )
