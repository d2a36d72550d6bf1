"""sentmtl/model/modeling_parts.py: the pooling modes. (The heads' logit scale, learned over 100 steps:
tests/e2e/test_trained_heads.py.)"""

import torch

from sentmtl.model.modeling_sentmtl import Pooling


def test_pooling_modes_compute_what_they_say():
    states = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(Pooling("mean")(states, mask), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    torch.testing.assert_close(Pooling("cls")(states, mask), states[:, 0])
    pooler = torch.randn(2, 2)
    assert Pooling("pooler")(states, mask, pooler) is pooler
