"""Offline wing of ganserve: train DCGAN / conditional DCGAN generators, evaluate, export to ONNX."""
