"""Model directories -> validated, loaded, warmed ONNX Runtime sessions behind batchers.

Why here: the service's side of the contract. What a model directory must hold is declared once
in `modelformat` (the card, the network signatures, checksums); this module applies it to the
files and adds what only a server knows: execution providers, sessions, warm-up, batchers. Every
failure names the file and the problem (`mnist-cdcgan/generator.onnx: checksum mismatch ...`); a
bad directory is logged and listed as failed and never takes the other models down.

Lifecycle, one model at a time: `load` (blocking: read, check, open sessions, warm up) ->
`Model.start` (its batchers, inside the event loop) -> served (`Registry.models`) ->
`Model.close` (drain). `Registry.swap` replaces a served model atomically: the new one starts,
takes the name, then the old one drains, so a rollout needs no restart and loses no request.
Models are keyed by (name, version): Triton's versioned layout (`models/<name>/<version>/`, whole
numbers) beside the flat one (`models/<name>/`, version "1"). Every loaded version is served; the
newest is the name's default. `Registry.reload` discovers the directory again: new versions load
and serve, versions whose folder is gone retire and drain (SIGHUP and POST /admin/reload call it).
"""

from __future__ import annotations

import asyncio
import contextlib
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

from modelformat.card import CARD_FILE, ContractError, ModelCard, read_card, verify_files
from modelformat.card import valid_name as valid_name  # re-exported: the routes check names with it
from modelformat.signatures import IMAGE, NETWORKS, Signature, Y, Z, check_signature

from . import metrics
from .batcher import Batcher
from .errors import ModelLoadError, ModelNotFound, ModelUnavailable
from .settings import PREFERRED_DEFAULT_MODEL, Settings

log = logging.getLogger(__name__)

FLAT_VERSION = "1"  # the one version of a flat `models/<name>/` directory (Triton numbers from 1)
VERSION_FOLDER = re.compile(r"^(0|[1-9][0-9]{0,17})$")  # models/<name>/<version>/: a whole number
# A request holds the model it looked up for a moment before its rows join the model's queue (the
# latents for up to max_images seeds: milliseconds). A model a reload retires stays open this long
# after it stops being served, so those requests still run; then it drains.
RETIRE_GRACE_S = 1.0


@dataclass(frozen=True)
class ModelKey:
    name: str
    version: str = FLAT_VERSION

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class Model:
    """A loaded model: its card, signatures, sessions (behind batchers) and reference statistics."""

    key: ModelKey
    path: Path
    model_card: ModelCard
    card: dict[str, Any]  # model.json as loaded (GET /models/{name} shows it as it is on disk)
    provider: str
    signatures: dict[str, Signature]  # per network role, as its ONNX session declares it
    generator: Batcher
    discriminator: Batcher | None = None
    classifier: Batcher | None = None
    reference: dict[str, np.ndarray] | None = None

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def version(self) -> str:
        return self.key.version

    @property
    def kind(self) -> str:
        return self.model_card.kind

    @property
    def conditional(self) -> bool:
        return self.model_card.conditional

    @property
    def latent_dim(self) -> int:
        return self.model_card.latent_dim

    @property
    def num_classes(self) -> int:
        return self.model_card.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.model_card.class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.model_card.image_shape

    def batchers(self) -> list[Batcher]:
        return [b for b in (self.generator, self.discriminator, self.classifier) if b is not None]

    @property
    def started(self) -> bool:
        return self.generator.started

    def start(self) -> None:
        """Start the batchers (inside the event loop); a started model is left as it is."""
        for b in self.batchers():
            if not b.started:
                b.start()

    async def close(self, drain_timeout_s: float) -> None:
        """Refuse new work, let queued and running batches finish (all batchers at once), stop."""
        await asyncio.gather(*(b.close(drain_timeout_s) for b in self.batchers()))


@dataclass
class Reload:
    """What one `Registry.reload` did, by model key (`name@version`)."""

    loaded: list[str] = field(default_factory=list)  # new keys, now served
    replaced: list[str] = field(default_factory=list)  # served keys whose model.json changed
    retired: list[str] = field(default_factory=list)  # served keys whose folder is gone
    failed: dict[str, str] = field(default_factory=dict)  # key -> why (a served old one stays)
    unchanged: list[str] = field(default_factory=list)


@dataclass
class Registry:
    settings: Settings
    models: dict[str, Model] = field(default_factory=dict)  # name -> its default (newest) version
    versions: dict[str, dict[str, Model]] = field(default_factory=dict)  # name -> version -> model
    failed: dict[str, str] = field(default_factory=dict)  # name -> why no version of it loaded
    loaded: bool = False
    _providers: list | None = field(default=None, repr=False)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _retiring: set[asyncio.Task] = field(default_factory=set, repr=False)  # reload(wait=False)'s drains

    @property
    def default_name(self) -> str | None:
        s = self.settings.default_model
        if s:
            return s
        if PREFERRED_DEFAULT_MODEL in self.models:
            return PREFERRED_DEFAULT_MODEL
        return min(self.models) if self.models else None

    def get(self, name: str | None, version: str | None = None) -> Model:
        """The model served as `name` (default: the default model), at `version` (default: the
        newest served). Raises ModelNotFound, or ModelUnavailable for a model that failed to load."""
        if name is None:
            name = self.default_name
            if name is None:
                raise ModelNotFound("no model is loaded (see GET /models)", field="model")
        served = self.versions.get(name)
        if served is None:
            if name in self.failed:
                raise ModelUnavailable(f"model {name!r} failed to load: {self.failed[name]}", field="model")
            raise ModelNotFound(f"unknown model {name!r}; see GET /models", field="model")
        if version is None:
            return self.models[name]
        model = served.get(canonical_version(version))
        if model is None:
            raise ModelNotFound(
                f"version: model {name!r} has no version {version!r} (served: {', '.join(served)})",
                field="version",
            )
        return model

    @property
    def ready(self) -> bool:
        return self.loaded and bool(self.models) and not self.failed

    def served(self) -> list[Model]:
        """Every served model, every version."""
        return [m for vs in self.versions.values() for m in vs.values()]

    # --- one model ------------------------------------------------------------------------------

    @property
    def providers(self) -> list:
        if self._providers is None:
            self._providers = choose_providers(self.settings.provider)
            log.info(
                "ONNX Runtime providers requested: %s",
                [p if isinstance(p, str) else p[0] for p in self._providers],
            )
        return self._providers

    def discover(self) -> list[tuple[ModelKey, Path]]:
        """The model directories under `models_dir`, by key: a folder holding model.json is one
        model (version 1, the flat layout); a folder of integer-named folders is one model version
        per folder (Triton's layout, `models/<name>/<version>/`). A folder with neither is listed
        as version 1, so that loading it fails and says why."""
        root = Path(self.settings.models_dir)
        if not root.is_dir():
            log.warning("models directory %s does not exist: serving no models", root)
            return []
        found = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            subs = [] if (folder / CARD_FILE).is_file() else [p for p in folder.iterdir() if p.is_dir()]
            versions = sorted((p for p in subs if VERSION_FOLDER.match(p.name)), key=lambda p: int(p.name))
            for odd in sorted(p.name for p in subs if not VERSION_FOLDER.match(p.name)):
                log.warning(
                    "%s/%s: not a version folder (a whole number, no leading zero): ignored", folder.name, odd
                )
            if versions:
                found += [(ModelKey(folder.name, p.name), p) for p in versions]
            else:
                found.append((ModelKey(folder.name), folder))
        return found

    def load(self, key: ModelKey, path: Path) -> Model:
        """Validate, load and warm one model directory (blocking; call from a thread). Serves
        nothing yet: start it and `swap` it in, or let `load_all` serve it. Raises ModelLoadError."""
        try:
            return load_model(path, self.settings, self.providers, key)
        except ModelLoadError:
            raise
        except Exception as exc:  # never let one directory take the others down
            log.exception("model %s not loaded", key)
            raise ModelLoadError(f"{path.name}: {type(exc).__name__}: {exc}") from exc

    async def swap(self, model: Model, drain_timeout_s: float, grace_s: float = 0.0) -> Model | None:
        """Serve `model` under its key (name and version): start it, swap it in, then drain the
        model it replaced (its queued and running batches finish). Returns the replaced model
        (closed) or None. Other versions of the name stay served; the newest is the default.

        A request that fetched the old model just before the swap and enqueues after its
        batchers closed gets ShuttingDown (503, retryable); `grace_s` keeps the old one open that
        long after the swap, for requests between their lookup and their enqueue (see `reload`)."""
        model.start()
        old = self._serve(model)
        if old is None:
            return None
        await self._retire([old], drain_timeout_s, grace_s)
        log.info("model %s replaced by %s (%s)", old.key, model.key, model.path)
        return old

    async def remove(self, key: ModelKey | str, drain_timeout_s: float, grace_s: float = 0.0) -> Model | None:
        """Stop serving `key` (a name alone: every version of it) and drain it. Returns the model
        removed (for a name, its default version; all are drained), or None if none was served."""
        if isinstance(key, str):
            gone = list(self.versions.get(key, {}).values())
            removed = self.models.get(key)
        else:
            removed = self.versions.get(key.name, {}).get(key.version)
            gone = [removed] if removed is not None else []
        for model in gone:
            self._unserve(model)
        await self._retire(gone, drain_timeout_s, grace_s)
        return removed

    def _serve(self, model: Model) -> Model | None:
        """Serve `model` (one step on the event loop: a request sees the old or the new one);
        returns the model it replaced at the same key, if another."""
        served = self.versions.setdefault(model.name, {})
        old = served.get(model.version)
        if old is not None and _info_labels(old) != _info_labels(model):
            with contextlib.suppress(KeyError):
                metrics.MODEL_INFO.remove(*_info_labels(old))
        served[model.version] = model
        self.versions[model.name] = dict(sorted(served.items(), key=lambda kv: _version_order(kv[0])))
        self.models[model.name] = next(reversed(self.versions[model.name].values()))
        self.failed.pop(model.name, None)
        metrics.MODEL_INFO.labels(*_info_labels(model)).set(1)
        return old if old is not model else None

    def _unserve(self, model: Model) -> None:
        served = self.versions.get(model.name, {})
        if served.get(model.version) is not model:
            return
        del served[model.version]
        if served:
            self.models[model.name] = next(reversed(served.values()))
        else:
            self.versions.pop(model.name, None)
            self.models.pop(model.name, None)
        with contextlib.suppress(KeyError):
            metrics.MODEL_INFO.remove(*_info_labels(model))

    @staticmethod
    async def _retire(models: list[Model], drain_timeout_s: float, grace_s: float) -> None:
        if models and grace_s > 0:
            await asyncio.sleep(grace_s)
        await asyncio.gather(*(m.close(drain_timeout_s) for m in models))

    # --- every model --------------------------------------------------------------------------

    def load_all(self) -> None:
        """Discover and load every model directory (blocking; call from a thread)."""
        for key, path in self.discover():
            try:
                model = self.load(key, path)
            except ModelLoadError as exc:
                log.error("model %s not loaded: %s", key, exc)
                if key.name not in self.versions:
                    self.failed[key.name] = str(exc)
            else:
                self._serve(model)
                log.info("model %s loaded (%s, %s)", model.key, model.kind, model.provider)
        if self.settings.default_model and self.settings.default_model not in self.models:
            log.warning("default model %r is not loaded", self.settings.default_model)
        self.loaded = True

    async def reload(
        self, drain_timeout_s: float, grace_s: float = RETIRE_GRACE_S, wait: bool = True
    ) -> Reload:
        """Discover the model directory again: load new versions (and folders whose model.json
        changed), serve them, retire the versions whose folder is gone, without failing a request.

        The new models load in a thread while the old ones serve; each is swapped in as soon as it
        is warm (the newest version becomes the default at once); the replaced and retired ones
        stay open `grace_s`, then drain. A folder that fails to load changes nothing: what served
        before serves on. One reload at a time (a second waits for the first). `wait=False`
        returns once the new models serve; the old ones drain in the background."""
        async with self._reloading:
            report = Reload()
            found = await asyncio.to_thread(self.discover)
            served = {m.key: m for m in self.served()}
            old: list[Model] = []
            for key, path in found:
                current = served.get(key)
                if current is not None and current.path == path and not _card_changed(current):
                    report.unchanged.append(str(key))
                    continue
                try:
                    model = await asyncio.to_thread(self.load, key, path)
                except ModelLoadError as exc:
                    log.error("reload: model %s not loaded: %s", key, exc)
                    report.failed[str(key)] = str(exc)
                    if key.name not in self.versions:
                        self.failed[key.name] = str(exc)
                    continue
                model.start()
                replaced = self._serve(model)
                if replaced is not None:
                    old.append(replaced)
                (report.replaced if current is not None else report.loaded).append(str(key))
            keys = {key for key, _ in found}
            for key, model in served.items():
                if key not in keys:
                    self._unserve(model)
                    old.append(model)
                    report.retired.append(str(key))
            names = {key.name for key in keys}
            for name in [n for n in self.failed if n not in names or n in self.versions]:
                del self.failed[name]
            log.info("reload: %s", report)
            if wait:
                await self._retire(old, drain_timeout_s, grace_s)
            elif old:
                task = asyncio.ensure_future(self._retire(old, drain_timeout_s, grace_s))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return report

    def start(self) -> None:
        for model in self.served():
            model.start()

    async def close(self, drain_timeout_s: float) -> None:
        """Drain every served model at once (one `drain_timeout_s` for all)."""
        await asyncio.gather(*(m.close(drain_timeout_s) for m in self.served()), *self._retiring)


def _info_labels(model: Model) -> tuple[str, str, str, str]:
    return model.name, model.version, model.provider, model.kind


def _version_order(version: str) -> tuple[int, str]:
    """Versions sort as numbers (2 before 10); a key built by hand with another string, first."""
    return (int(version), "") if version.isdigit() else (-1, version)


def canonical_version(version: str) -> str:
    """'007' -> '7': versions are whole numbers; their folders are written without leading zeros."""
    return str(int(version)) if version.isdigit() else version


def _card_changed(model: Model) -> bool:
    """Whether the model's model.json on disk differs from the one it loaded (its checksums name
    every file, so a new file with its new card shows here; a missing or bad card counts too)."""
    try:
        return json.loads((model.path / CARD_FILE).read_bytes()) != model.card
    except (OSError, ValueError):
        return True


def choose_providers(preference: str) -> list:
    """CUDA (with heuristic conv algorithm search: no per-shape benchmarking) when listed, else CPU."""
    available = ort.get_available_providers()
    if preference != "cpu" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]
    if preference == "cuda":
        log.warning("provider 'cuda' requested but onnxruntime lists only %s; using CPU", available)
    return ["CPUExecutionProvider"]


def _contract(fn, *args):
    """Call a `modelformat` check; its ContractError becomes the service's ModelLoadError."""
    try:
        return fn(*args)
    except ContractError as exc:
        raise ModelLoadError(str(exc)) from None


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


def load_model(path: Path, settings: Settings, providers: list, key: ModelKey | None = None) -> Model:
    """Validate, load and warm one model directory (raises ModelLoadError).

    `key`: the name (and version) the directory layout gives; the card must carry that name.
    """
    key = key or ModelKey(path.name)
    card = _contract(read_card, path, key.name)
    _contract(verify_files, path, card)
    name, files = card.name, card.files
    sessions, signatures = {}, {}
    for role in NETWORKS:
        if role in files:
            sess = _session(path / files[role], settings, providers)
            signatures[role] = Signature.of_session(sess)
            problems = check_signature(card.signature(role), signatures[role])
            if problems:
                raise ModelLoadError(f"{name}/{files[role]}: " + "; ".join(problems))
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
    pad = settings.pad_batches == "on" or (settings.pad_batches == "auto" and provider.startswith("CUDA"))
    pad_to = settings.max_batch_size if pad else 0
    batchers = {
        role: Batcher(
            f"{name}:{role}" if role != "generator" else name,
            _runner(sess, card.signature(role).output_names, pad_to, solo.get(role)),
            model=name if role == "generator" else f"{name}:{role}",
            version=key.version,
            **batch_kw,
        )
        for role, sess in sessions.items()
    }
    model = Model(
        key=key,
        path=path,
        model_card=card,
        card=json.loads((path / CARD_FILE).read_text()),
        provider=provider,
        signatures=signatures,
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
    c = model.model_card
    for n in sorted({1, min(max_batch_size, 64)}):
        feeds = {Z: np.zeros((n, c.latent_dim), np.float32)}
        y = {}
        if model.conditional:
            y = {Y: np.zeros((n, c.num_classes), np.float32)}
            y[Y][:, 0] = 1
        where = f"{model.name}/{c.files['generator']}"
        try:
            (image,) = model.generator.run_fn(feeds | y)[:1]
        except Exception as exc:
            raise ModelLoadError(f"{where}: warm-up run failed ({exc})") from exc
        if list(image.shape) != [n, *c.image_shape]:
            raise ModelLoadError(
                f"{where}: output image has shape {list(image.shape)}, expected {[n, *c.image_shape]}"
            )
        if model.discriminator is not None:
            logit = model.discriminator.run_fn({IMAGE: image} | y)[0]
            if logit.shape != (n,):
                raise ModelLoadError(
                    f"{model.name}/{c.files['discriminator']}: logit shape {logit.shape}, expected ({n},)"
                )
        if model.classifier is not None:
            logits, feats = model.classifier.run_fn({IMAGE: image})
            if logits.shape != (n, len(c.class_names)):
                raise ModelLoadError(
                    f"{model.name}/{c.files['classifier']}: logits shape {logits.shape}, "
                    f"expected ({n}, {len(c.class_names)})"
                )
            if model.reference is not None and feats.shape[1] != model.reference["mu"].shape[0]:
                raise ModelLoadError(
                    f"{model.name}/{c.files['reference_stats']}: "
                    f"{model.reference['mu'].shape[0]} features, "
                    f"the classifier gives {feats.shape[1]}"
                )
