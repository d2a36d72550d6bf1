"""Training: arguments, the trainer, callbacks, checkpoints, the run (`run_mtl.py`), its report, model card and
run_config.yaml. The top layer: it imports every other, and none imports it."""
