"""The package's layout: the layers import only downwards, the half that travels beside the weights imports only
itself, the 0.2 module paths still import (the same module objects, with a DeprecationWarning), and nothing is
required that is never imported."""

import ast
import importlib
import pickle
import sys
import warnings
from pathlib import Path

import pytest
from helpers import REPO_ROOT

import sentmtl
from sentmtl._moved import MOVED

PACKAGE = Path(sentmtl.__file__).parent
# Bottom to top: a module may import its own layer and the ones before it, never one after it.
LAYERS = ["utils", "model", "serving", "tasks", "data", "training"]


def _relative_imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every relative import in a file (function-level ones included)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                found.append((node.level, node.module))
            else:
                found += [(node.level, alias.name) for alias in node.names]
    return found


def _target_layer(layer: str, level: int, module: str) -> str | None:
    """The layer a relative import in `layer` reaches (None: the package root, e.g. `__version__`)."""
    if level == 1:
        return layer
    first = module.split(".")[0]
    return first if first in LAYERS else None


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_itself_and_the_layers_below(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    for path in sorted((PACKAGE / layer).glob("*.py")):
        for level, module in _relative_imports(path):
            reached = _target_layer(layer, level, module)
            assert reached is None or reached in allowed, f"{path.relative_to(PACKAGE)} imports {module!r} ({reached})"


def test_the_model_half_imports_only_its_siblings():
    """transformers copies modeling_sentmtl.py and the files it imports with `from .x import` beside the weights;
    an import that leaves sentmtl/model/ would be missing there (trust_remote_code without the package)."""
    for path in sorted((PACKAGE / "model").glob("*.py")):
        for level, module in _relative_imports(path):
            assert level == 1 and (PACKAGE / "model" / f"{module.split('.')[0]}.py").is_file(), (path.name, module)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_02_module_path_imports_the_moved_module_with_a_warning(old):
    new = importlib.import_module(f"sentmtl.{MOVED[old]}")
    sys.modules.pop(f"sentmtl.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"sentmtl\.{old} moved to sentmtl\.{MOVED[old]}"):
        aliased = importlib.import_module(f"sentmtl.{old}")
    assert aliased is new  # one module under two names: patches and isinstance checks see the same objects
    assert new.__spec__.name == f"sentmtl.{MOVED[old]}"  # its own spec is left alone


def test_02_imports_of_the_renamed_packages_and_names_keep_working():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentmtl.arguments import SentMtlTrainingArguments
        from sentmtl.corpus import train_test_split

        from sentmtl.data import read_table
        from sentmtl.tasks import TaskSpec, default_tasks
    from sentmtl.data.files import read_table as moved_read_table
    from sentmtl.data.split import train_test_split as moved_split
    from sentmtl.model.task_spec import TaskSpec as MovedTaskSpec
    from sentmtl.training.arguments import SentMtlTrainingArguments as MovedArguments

    assert (SentMtlTrainingArguments, train_test_split, read_table, TaskSpec) == (
        MovedArguments,
        moved_split,
        moved_read_table,
        MovedTaskSpec,
    )
    assert [task.name for task in default_tasks()][:2] == ["classification", "sentiment"]


def test_a_pickle_that_names_a_02_module_loads():
    """A checkpoint's training_args.bin names the class by its 0.2 module (`sentmtl.arguments`)."""
    from sentmtl.model.task_spec import TaskSpec

    data = pickle.dumps(
        TaskSpec("tone", "classification", labels=["a", "b"]), protocol=2
    )  # GLOBAL names the module as text
    old = data.replace(b"sentmtl.model.task_spec", b"sentmtl.tasks")  # the 0.2 module of TaskSpec
    assert old != data
    assert pickle.loads(old) == pickle.loads(data)


def test_no_unused_install_requirements():
    """`evaluate` was required and never imported (metrics are scikit-learn, offline)."""
    requirements = (REPO_ROOT / "setup.cfg").read_text().split("install_requires =")[1].split("\n\n")[0]
    assert "evaluate" not in requirements
