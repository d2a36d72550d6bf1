"""The half of sentmtl that travels beside the weights: the config, the model, its output, its parts, how its losses
combine, the task types' model half and their losses, the DDP helpers, the encoder checks and the folder's ONNX export
rule. `save_pretrained` copies these files next to the weights so that
`AutoModel.from_pretrained(dir, trust_remote_code=True)` works without sentmtl: they import only each other (by
`from .x import`), torch, transformers and the standard library. Nothing here imports from the rest of the package."""
