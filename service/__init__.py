"""ganserve's online wing: FastAPI + ONNX Runtime serving of model directories (never torch).

Importing the package imports nothing heavy, so `service.client` and `service.schemas` work
without FastAPI or ONNX Runtime installed.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # single-sourced from pyproject.toml's [project] version
    __version__ = version("ganserve")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
