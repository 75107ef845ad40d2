"""ganserve's online wing: FastAPI + ONNX Runtime serving of model directories (never torch).

Importing the package imports nothing heavy, so `service.client` and `service.schemas` work
without FastAPI or ONNX Runtime installed.
"""
