"""The modules 0.3 moved into layer subpackages, still importable under their 0.2 names (with a DeprecationWarning).

`import sentmtl.trainer` gives the very module `sentmtl.training.trainer` (one object under two names), so
`isinstance` checks, monkeypatching and pickles that name the old path (a checkpoint's training_args.bin) keep working.
`sentmtl.data` and `sentmtl.tasks` are packages now; their `__init__` exports what the 0.2 modules of those names did.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# 0.2 name -> 0.3 place (under `sentmtl.`). docs/design.md draws the layers; CHANGELOG 0.3.0 has the same table.
MOVED = {
    "configuration_sentmtl": "model.configuration_sentmtl",
    "modeling_sentmtl": "model.modeling_sentmtl",
    "modeling_parts": "model.modeling_parts",
    "task_types": "model.task_types",
    "distributed": "model.distributed",
    "encoders": "model.encoders",
    "errors": "utils.errors",
    "network": "utils.network",
    "fingerprints": "utils.fingerprints",
    "memory": "utils.memory",
    "loading": "serving.loading",
    "precision": "serving.precision",
    "embed": "serving.embed",
    "embed_io": "serving.embed_io",
    "embed_cli": "serving.embed_cli",
    "export": "serving.st_export",
    "onnx_export": "serving.onnx_export",
    "onnx_runtime": "serving.onnx_runtime",
    "hub": "serving.hub",
    "task_io": "tasks.io",
    "metrics": "tasks.metrics",
    "corpus": "data.corpus",
    "stsb": "data.stsb",
    "run_tasks": "data.plan",
    "task_data": "data.sources",
    "batching": "data.batching",
    "sampler": "data.sampler",
    "teacher_cache": "data.teacher_cache",
    "arguments": "training.arguments",
    "trainer": "training.trainer",
    "callbacks": "training.callbacks",
    "checkpoints": "training.checkpoints",
    "run": "training.run",
    "run_config": "training.run_config",
    "report": "training.report",
    "model_card": "training.model_card",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)  # the module itself, not a copy
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec  # already executed under its own name; the import system set the alias's spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds `sentmtl.<0.2 name>` and answers with the module at its 0.3 place."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "sentmtl" or name not in MOVED:
            return None
        target = f"sentmtl.{MOVED[name]}"
        warnings.warn(f"{fullname} moved to {target} in sentmtl 0.3; import it from there.", DeprecationWarning, 2)
        return importlib.util.spec_from_loader(fullname, _Alias(target))


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())  # first: a stale 0.2 file left on the path must not win
