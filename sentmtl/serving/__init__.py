"""Using a model: loading it, `encode`, the precision rule, the sentence-transformers and ONNX exports, the ONNX
runtime, the Hub and `run_embed.py`'s command line. Imports `sentmtl.model` and `sentmtl.utils`."""
