"""Evaluate a model directory from its ONNX files only: FID, Inception Score, label accuracy, diversity.

Every figure comes with its real-data baseline computed the same way (real vs real), so a reader can
tell a good score from a bad one. The feature network defaults to the directory's classifier.onnx
(Inception weights cannot be downloaded here) but any callable images -> (logits, features) works.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelformat import latents_for_seeds, one_hot, read_card
from modelformat.metrics import fid, inception_score_splits, softmax
from modelformat.signatures import FEATURES, IMAGE, LOGITS, Y, Z

FeatureNet = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # images -> (logits, features)


# --- metric math -----------------------------------------------------------------------------------


# FID, Inception Score and softmax are the contract's (modelformat.metrics): /score uses them too.


def mean_pairwise_distance(features: np.ndarray) -> float:
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        return float("nan")
    sq = (f**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0)
    return float(np.sqrt(d2)[np.triu_indices(len(f), 1)].mean())


def per_class_diversity(features: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Mean pairwise feature distance within each class: collapse shows as a small value."""
    return [mean_pairwise_distance(features[labels == k]) for k in range(num_classes)]


def _ratios(fake: list[float], real: list[float]) -> list[float]:
    return [f / r for f, r in zip(fake, real, strict=True) if np.isfinite(f) and r > 0]


# --- running the ONNX files ------------------------------------------------------------------------


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_feature_net(path: Path, batch_size: int = 500) -> FeatureNet:
    session = _session(path)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = [], []
        for i in range(0, len(images), batch_size):
            lg, ft = session.run([LOGITS, FEATURES], {IMAGE: images[i : i + batch_size].astype(np.float32)})
            logits.append(lg)
            features.append(ft)
        return np.concatenate(logits), np.concatenate(features)

    return run


def generate(model_dir: Path, n: int, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray | None]:
    """n samples with seeds 0..n-1 (the latent rule) and, if conditional, labels i % K."""
    card = read_card(model_dir)
    session = _session(model_dir / card.files["generator"])
    k, nz = card.num_classes, card.latent_dim
    labels = np.arange(n) % k if k else None
    images = []
    for i in range(0, n, batch_size):
        feed = {Z: latents_for_seeds(range(i, min(n, i + batch_size)), nz)[0]}
        if k:
            feed[Y] = one_hot(labels[i : i + batch_size], k)
        images.append(session.run([IMAGE], feed)[0])
    return np.concatenate(images), labels


# --- the evaluation --------------------------------------------------------------------------------


def evaluate(
    model_dir: Path,
    reference: np.ndarray,
    reference_labels: np.ndarray,
    baseline: np.ndarray,
    baseline_labels: np.ndarray,
    n_samples: int = 1000,
    feature_net: FeatureNet | None = None,
    splits: int = 10,
) -> dict:
    """Fake samples vs the held-out `reference`; real `baseline` images (same count) vs it too."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    net = feature_net or onnx_feature_net(model_dir / card.files["classifier"])
    num_classes = len(card.class_names)
    fake, cond = generate(model_dir, n_samples)
    f_logits, f_feat = net(fake)
    r_logits, r_feat = net(reference)
    b_logits, b_feat = net(baseline[:n_samples])
    b_labels = baseline_labels[:n_samples]
    f_pred = f_logits.argmax(1)
    fake_labels = cond if cond is not None else f_pred  # unconditional: group by predicted class
    fake_div = per_class_diversity(f_feat, fake_labels, num_classes)
    real_div = per_class_diversity(b_feat, b_labels, num_classes)
    ratios = _ratios(fake_div, real_div)
    # The classifier was trained on the baseline's split, which it maps more tightly than unseen
    # digits; the held-out digits are unseen like the fakes, so the ratio against them is reported too.
    heldout_div = per_class_diversity(r_feat, np.asarray(reference_labels), num_classes)
    heldout_ratios = _ratios(fake_div, heldout_div)
    is_fake = inception_score_splits(softmax(f_logits), splits)
    is_real = inception_score_splits(softmax(b_logits), splits)
    result = {
        "samples": n_samples,
        "reference": {"split": "held-out", "images": len(reference)},
        "feature_network": "classifier.onnx"
        if feature_net is None
        else getattr(feature_net, "__name__", "custom"),
        "fid": {
            "model": fid(f_feat, r_feat),
            "real_baseline": fid(b_feat, r_feat),
            "baseline_images": len(b_feat),
        },
        "inception_score": {
            "model": {"mean": is_fake[0], "std": is_fake[1]},
            "real_baseline": {"mean": is_real[0], "std": is_real[1]},
            "splits": splits,
        },
        "diversity": {
            "model_per_class": fake_div,
            "real_per_class": real_div,
            "ratio_mean": float(np.mean(ratios)) if ratios else float("nan"),
            "ratio_min": float(np.min(ratios)) if ratios else float("nan"),
            "heldout_per_class": heldout_div,
            "heldout_ratio_mean": float(np.mean(heldout_ratios)) if heldout_ratios else float("nan"),
            "heldout_ratio_min": float(np.min(heldout_ratios)) if heldout_ratios else float("nan"),
            "measure": "mean pairwise distance of classifier features within each class "
            "(conditional: the requested label; unconditional: the predicted one), fake / real",
        },
        "class_histogram": np.bincount(f_pred, minlength=num_classes).tolist(),
        "classifier_heldout_accuracy": float((r_logits.argmax(1) == reference_labels).mean()),
    }
    if cond is not None:
        per_label = [float((f_pred[cond == k] == k).mean()) for k in range(num_classes)]
        result["label_accuracy"] = {
            "model": float((f_pred == cond).mean()),
            "model_per_label": per_label,
            "real_baseline": float(
                (b_logits.argmax(1) == b_labels).mean()
            ),  # the classifier's training split
            "real_heldout": result["classifier_heldout_accuracy"],  # real digits the classifier never saw
        }
    return result


def write_evaluation(model_dir: Path, result: dict) -> None:
    """Store `result` in the card; the files and their checksums are left as they are."""
    card = read_card(model_dir)
    card.evaluation = result
    card.save(model_dir)


def format_table(result: dict) -> str:
    rows = [("metric", "model", "real baseline")]
    rows.append(
        ("FID (lower is better)", f"{result['fid']['model']:.3f}", f"{result['fid']['real_baseline']:.3f}")
    )
    m, r = result["inception_score"]["model"], result["inception_score"]["real_baseline"]
    rows.append(
        ("Inception Score", f"{m['mean']:.3f} +- {m['std']:.3f}", f"{r['mean']:.3f} +- {r['std']:.3f}")
    )
    if "label_accuracy" in result:
        la = result["label_accuracy"]
        rows.append(("label accuracy", f"{la['model']:.2%}", f"{la['real_baseline']:.2%}"))
        rows.append(("  real: held-out digits", "", f"{la['real_heldout']:.2%}"))
        rows.append(("worst label accuracy", f"{min(la['model_per_label']):.2%}", ""))
    d = result["diversity"]
    rows.append(("diversity fake/real (mean, min)", f"{d['ratio_mean']:.3f}, {d['ratio_min']:.3f}", "1.000"))
    if "heldout_ratio_mean" in d:
        rows.append(
            (
                "  vs held-out real (mean, min)",
                f"{d['heldout_ratio_mean']:.3f}, {d['heldout_ratio_min']:.3f}",
                "1.000",
            )
        )
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in width))
    return (
        "\n".join(lines)
        + f"\n({result['samples']} samples; reference {result['reference']['images']} held-out)"
    )
