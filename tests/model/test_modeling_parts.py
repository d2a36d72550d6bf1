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


def test_mean_pooling_stays_in_float32_under_autocast():
    """The pooled vector is one batched product (`torch.bmm`), which autocast would round to bf16: float32 states (the
    encoder's last layer norm gives them under autocast) pool in float32, as the masked sum they replaced did (found
    in review: 3.6e-3 relative error under bf16 autocast); half-precision states (an encoder run with half weights)
    pool in float32 too."""
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(4, 9, 16, generator=generator)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 5:], mask[3, 2:] = 0, 0
    expected = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = Pooling("mean")(states, mask)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, expected, rtol=1e-6, atol=1e-7)
    assert Pooling("mean")(states.bfloat16(), mask).dtype == torch.float32
