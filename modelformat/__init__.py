"""The model directory contract (docs/MODEL_FORMAT.md) as code, shared by `training` and `service`.

Why a package of its own: the offline wing writes model directories and the online wing reads
them; neither may import the other, and this package imports only numpy and pydantic, so either
wing (and any third-party exporter) can use it without torch, FastAPI or ONNX Runtime.

- `card`: the `ModelCard` (model.json), reading and writing it, sha256 checksums, model names.
- `signatures`: the networks' input/output names, dtypes and shapes, and the check of an ONNX
  session against them.
- `latent`: the per-seed latent rule (a seed means the same image in training, evaluation and
  serving).
- `metrics`: FID, Inception Score, softmax/sigmoid and the reference statistics file (numpy only).
"""

from modelformat.card import (
    CARD_FILE,
    ContractError,
    ModelCard,
    read_card,
    sha256_file,
    valid_name,
    verify_files,
    write_card,
)
from modelformat.latent import latents_for_seeds, one_hot, seeded
from modelformat.signatures import Signature, TensorSpec, check_signature

__all__ = [
    "CARD_FILE",
    "ContractError",
    "ModelCard",
    "Signature",
    "TensorSpec",
    "check_signature",
    "latents_for_seeds",
    "one_hot",
    "read_card",
    "seeded",
    "sha256_file",
    "valid_name",
    "verify_files",
    "write_card",
]
