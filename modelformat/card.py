"""The model card (`model.json`): one pydantic model, read and written only through this module.

Why pydantic: the card is the one schema of the model directory (like Triton's model config), so
its checks live in one declaration and every error names the field: `mnist/model.json: field
'latent_dim' = 0 is invalid: Input should be greater than or equal to 1`. Unknown fields are
errors (a typo must not pass silently); `training` and `evaluation` are free-form.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from modelformat import signatures

CARD_FILE = "model.json"
FORMAT_VERSION = 1
Kind = Literal["conditional", "unconditional"]
Role = Literal["generator", "discriminator", "classifier", "reference_stats", "samples"]
KINDS, ROLES = get_args(Kind), get_args(Role)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHECKSUM_RE = r"^sha256:[0-9a-fA-F]{64}$"


class ContractError(ValueError):
    """A model directory that does not follow docs/MODEL_FORMAT.md; the message names the file."""


def valid_name(name: str) -> bool:
    """Model names are plain identifiers: no path separators, no '..', no leading dot."""
    return bool(NAME_RE.match(name)) and ".." not in name


def _plain_identifier(name: str) -> str:
    if not valid_name(name):
        raise ValueError(f"{name!r} is not a plain identifier ({NAME_RE.pattern}, no '..')")
    return name


def _plain_file_name(name: str) -> str:
    if "/" in name or "\\" in name or ".." in name or name in ("", "."):
        raise ValueError(f"{name!r} must be a plain file name (no '/', '\\' or '..')")
    return name


def _image_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if shape[0] not in (1, 3):
        raise ValueError(f"{list(shape)} must have 1 or 3 channels")
    return shape


PositiveInt = Annotated[StrictInt, Field(ge=1)]


class ModelCard(BaseModel):
    """model.json, format_version 1 (the fields are described in docs/MODEL_FORMAT.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    format_version: Literal[1]
    name: Annotated[StrictStr, AfterValidator(_plain_identifier)]
    version: StrictStr | None = None
    description: StrictStr = ""
    kind: Kind
    latent_dim: Annotated[StrictInt, Field(ge=1, le=4096)]
    num_classes: Annotated[StrictInt, Field(ge=0)]
    class_names: list[StrictStr]
    image_shape: Annotated[tuple[PositiveInt, PositiveInt, PositiveInt], AfterValidator(_image_shape)]
    value_range: tuple[StrictFloat, StrictFloat] = (-1.0, 1.0)  # StrictFloat takes ints, not strings
    files: dict[Role, Annotated[StrictStr, AfterValidator(_plain_file_name)]]
    training: dict[str, Any] = {}
    evaluation: dict[str, Any] = {}
    checksums: dict[StrictStr, Annotated[StrictStr, Field(pattern=CHECKSUM_RE)]] = {}
    ganserve_version: StrictStr | None = None  # the package that exported it; absent in older cards

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.kind == "conditional" and (self.num_classes < 1 or len(self.class_names) != self.num_classes):
            raise ValueError("a conditional model needs num_classes >= 1 and len(class_names) == num_classes")
        if self.kind == "unconditional" and self.num_classes != 0:
            raise ValueError("an unconditional model must have num_classes 0")
        if "generator" not in self.files:
            raise ValueError("files.generator is required")
        return self

    @property
    def conditional(self) -> bool:
        return self.kind == "conditional"

    def signature(self, role: str) -> signatures.Signature:
        """What the contract requires of this model's `role` network (generator, ...)."""
        if role == "generator":
            return signatures.generator_signature(self.latent_dim, self.num_classes, self.image_shape)
        if role == "discriminator":
            return signatures.discriminator_signature(self.num_classes, self.image_shape)
        if role == "classifier":
            return signatures.classifier_signature(self.image_shape, len(self.class_names))
        raise ValueError(f"{role!r} is not a network role (one of {signatures.NETWORKS})")

    def to_json(self) -> str:
        """The file's text; NaN in the free-form sections is kept as json.dumps writes it."""
        unset = {k for k in ("version", "ganserve_version") if getattr(self, k) is None}
        return json.dumps(self.model_dump(exclude=unset), indent=2) + "\n"

    def save(self, model_dir: str | Path) -> None:
        """Write model.json as it is (see `write_card` to stamp checksums first)."""
        (Path(model_dir) / CARD_FILE).write_text(self.to_json())


def _describe(where: str, exc: ValidationError) -> str:
    """One line per problem, each naming the field (pydantic's own text is about Python types)."""
    lines = []
    for err in exc.errors():
        parts = [p for p in err["loc"] if p != "[key]"]  # a bad dict key: name the key itself
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            lines.append(f"missing field {loc!r}")
        elif not loc:
            lines.append(msg)
        else:
            got = repr(err["input"])
            got = got if len(got) <= 80 else got[:77] + "..."
            lines.append(f"field {loc!r} = {got} is invalid: {msg}")
    return f"{where}: " + "; ".join(lines)


def parse_card(text: str | bytes, where: str = CARD_FILE) -> ModelCard:
    """The card in `text`, or ContractError naming `where` and every bad field."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ContractError(f"{where}: must be a JSON object")
    if "format_version" in data and data["format_version"] != FORMAT_VERSION:
        raise ContractError(
            f"{where}: field 'format_version' = {data['format_version']!r} is invalid "
            f"(this code reads format_version {FORMAT_VERSION})"
        )
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise ContractError(_describe(where, exc)) from None


def read_card(model_dir: str | Path, name: str | None = None) -> ModelCard:
    """Read `model_dir/model.json`. `name`: the model name the directory layout gives (the folder
    for `models/<name>/`, its parent for a version folder `models/<name>/<version>/`); the card
    must carry it, so the name in a URL always matches the files served. Raises ContractError."""
    model_dir = Path(model_dir)
    folder = model_dir.name if name in (None, model_dir.name) else f"{model_dir.parent.name}/{model_dir.name}"
    where = f"{folder}/{CARD_FILE}"
    path = model_dir / CARD_FILE
    if not path.is_file():
        raise ContractError(f"{where}: missing")
    card = parse_card(path.read_bytes(), where)
    if name is not None and card.name != name:
        raise ContractError(f"{where}: name {card.name!r} does not match the directory name {name!r}")
    return card


def sha256_file(path: str | Path) -> str:
    """'sha256:<hex>' of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def verify_files(model_dir: str | Path, card: ModelCard) -> None:
    """Every file listed in `files` exists and matches its checksum; else ContractError."""
    model_dir = Path(model_dir)
    for role, fname in card.files.items():
        path = model_dir / fname
        if not path.is_file():
            raise ContractError(f"{card.name}/{fname}: missing (listed as files.{role})")
        expected = card.checksums.get(fname)
        if expected is None:
            raise ContractError(f"{card.name}/{CARD_FILE}: no checksum for {fname}")
        actual = sha256_file(path)
        if actual.lower() != expected.lower():
            raise ContractError(
                f"{card.name}/{fname}: checksum mismatch ({CARD_FILE} {expected}, file {actual})"
            )


def package_version() -> str:
    try:
        return version("ganserve")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def write_card(model_dir: str | Path, card: ModelCard) -> ModelCard:
    """Stamp the checksums of every listed file (computed last) and the exporting package's
    version, then write model.json. Returns the card as written."""
    model_dir = Path(model_dir)
    card.checksums = {fname: sha256_file(model_dir / fname) for fname in card.files.values()}
    card.ganserve_version = package_version()
    card.save(model_dir)
    return card
