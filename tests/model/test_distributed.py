"""sentmtl/model/distributed.py in one process: gather_rows and scale_for_ddp are identities, and the file imports
only torch and the standard library (it travels beside saved weights). Two processes:
tests/e2e/test_distributed_gloo.py."""

import ast
import sys

import pytest
import torch
import torch.distributed as dist
from helpers import REPO_ROOT, load_model_file

_distributed = load_model_file("distributed")  # as a file, without the sentmtl package
gather_rows, scale_for_ddp, world = _distributed.gather_rows, _distributed.scale_for_ddp, _distributed.world

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)


def test_identities_in_one_process():
    assert not (dist.is_available() and dist.is_initialized())
    assert world() == (1, 0)
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_rows(x) is x
    mask = torch.tensor([True, False])
    assert gather_rows(mask) is mask
    loss = (x**2).sum()
    scaled = scale_for_ddp(loss)
    assert scaled is loss
    (gradient,) = torch.autograd.grad(scaled, x)
    torch.testing.assert_close(gradient, 2 * x.detach())


def test_distributed_imports_only_torch_and_the_standard_library():
    """It is copied beside saved weights, where neither sentmtl nor transformers need be installed."""
    tree = ast.parse((REPO_ROOT / "sentmtl" / "model" / "distributed.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import of {node.module!r}"
            imported.add(node.module.split(".")[0])
    assert imported <= {"torch"} | set(sys.stdlib_module_names), imported
