"""The networks' signatures: input and output names, dtypes and shapes (docs/MODEL_FORMAT.md).

Why here: the exporter names the tensors, the service feeds them, test models build them and a
KServe v2 metadata endpoint lists them; one declaration serves all. Shapes use -1 for a dynamic
axis (the KServe v2 convention); the batch axis is always dynamic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Tensor names of the contract.
Z, Y, IMAGE = "z", "y", "image"  # inputs
LOGIT, LOGITS, FEATURES = "logit", "logits", "features"  # outputs (IMAGE is the generator's)
NETWORKS = ("generator", "discriminator", "classifier")
DYNAMIC = -1

# ONNX Runtime's type strings -> numpy dtype names.
ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class TensorSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    dtype: str  # a numpy dtype name, e.g. "float32"
    shape: tuple[int, ...]  # -1: dynamic


class Signature(BaseModel):
    model_config = ConfigDict(frozen=True)

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @classmethod
    def of_session(cls, session) -> Signature:
        """What an ONNX Runtime InferenceSession declares (duck-typed: ONNX Runtime is not imported)."""

        def spec(arg) -> TensorSpec:
            shape = tuple(d if isinstance(d, int) and d > 0 else DYNAMIC for d in arg.shape)
            return TensorSpec(name=arg.name, dtype=ONNX_DTYPES.get(arg.type, arg.type), shape=shape)

        return cls(
            inputs=tuple(spec(a) for a in session.get_inputs()),
            outputs=tuple(spec(a) for a in session.get_outputs()),
        )


def _float(name: str, *dims: int) -> TensorSpec:
    return TensorSpec(name=name, dtype="float32", shape=(DYNAMIC, *dims))


def generator_signature(latent_dim: int, num_classes: int, image_shape) -> Signature:
    """z [N, latent_dim] (+ y [N, num_classes] when num_classes > 0) -> image [N, C, H, W]."""
    inputs = [_float(Z, latent_dim)] + ([_float(Y, num_classes)] if num_classes else [])
    return Signature(inputs=tuple(inputs), outputs=(_float(IMAGE, *image_shape),))


def discriminator_signature(num_classes: int, image_shape) -> Signature:
    """image [N, C, H, W] (+ y [N, num_classes] when num_classes > 0) -> logit [N]."""
    inputs = [_float(IMAGE, *image_shape)] + ([_float(Y, num_classes)] if num_classes else [])
    return Signature(inputs=tuple(inputs), outputs=(_float(LOGIT),))


def classifier_signature(image_shape, num_labels: int) -> Signature:
    """image [N, C, H, W] -> logits [N, K], features [N, F] (F: any width)."""
    return Signature(
        inputs=(_float(IMAGE, *image_shape),),
        outputs=(_float(LOGITS, num_labels), _float(FEATURES, DYNAMIC)),
    )


def _mismatch(expected: TensorSpec, got: TensorSpec, what: str) -> str | None:
    want = f"{expected.dtype} [{', '.join(['N', *map(str, expected.shape[1:])])}]"
    if got.dtype != expected.dtype:
        return f"{what} {got.name!r} is {got.dtype}, the contract needs {want}"
    if len(got.shape) != len(expected.shape) or any(
        g != DYNAMIC and e != DYNAMIC and g != e
        for g, e in zip(got.shape[1:], expected.shape[1:], strict=False)
    ):
        return f"{what} {got.name!r} has shape {list(got.shape)}, expected {want}"
    if got.shape[0] != DYNAMIC:
        return f"{what} {got.name!r} has a fixed batch size {got.shape[0]}; it must be dynamic"
    return None


def check_signature(expected: Signature, got: Signature) -> list[str]:
    """The ways `got` breaks `expected` (empty: it conforms).

    Inputs must be exactly the contract's; extra outputs are allowed (the service asks for its
    own by name). Declared dimensions must match where both sides fix them; -1 matches anything.
    """
    want_in, got_in = sorted(expected.input_names), sorted(got.input_names)
    if want_in != got_in:
        return [f"inputs {got_in}, the contract needs {want_in}"]
    outs = {t.name: t for t in got.outputs}
    missing = [t.name for t in expected.outputs if t.name not in outs]
    if missing:
        return [f"outputs {sorted(outs)} lack {missing}"]
    ins = {t.name: t for t in got.inputs}
    problems = [_mismatch(t, ins[t.name], "input") for t in expected.inputs]
    problems += [_mismatch(t, outs[t.name], "output") for t in expected.outputs]
    return [p for p in problems if p]
