"""Build hook: the default models travel inside the wheel, as `service/default_models/`.

Why a hook: models/ at the repository root stays the one copy (no second one in git), while an
installed service must find the models inside its own package (service/settings.py). A wheel built
from the tree or from the sdist (which carries models/ by MANIFEST.in) gets every model directory
under `service/default_models/`; the registry verifies the model cards' checksums at load, however
the files were installed. An editable install (`pip install -e .`) copies nothing: its `service`
package is the repository's, next to models/. Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).resolve().parent / "models"
PACKAGED = Path("service") / "default_models"  # inside the built package; keep in step with settings.py


def model_files(root: Path) -> list[Path]:
    """Every file of the model directories, without local debris (hidden files, stray external data)."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "__")) for part in p.relative_to(root).parts)
        and not p.name.endswith(".onnx.data")
    )


class BuildPyWithModels(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode or not MODELS.is_dir():
            return
        target = Path(self.build_lib) / PACKAGED
        shutil.rmtree(target, ignore_errors=True)  # no stale model from an earlier build
        for rel in model_files(MODELS):
            self.mkpath(str((target / rel).parent))
            self.copy_file(str(MODELS / rel), str(target / rel), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode or not MODELS.is_dir():
            return outputs
        return outputs + [str(Path(self.build_lib) / PACKAGED / rel) for rel in model_files(MODELS)]


setup(cmdclass={"build_py": BuildPyWithModels})
