"""`encode(..., precision="fp16-weights" | "bf16-weights")`: the encoder run with its weights in half precision, for
the length of one call (`half_encoder_weights`), the pooling's mean, the projection and the normalisation in fp32.

Unlike `bf16` (autocast: fp32 weights, each matmul casting its weight every batch), the weights are cast once per
call, and every kernel of the encoder reads half the bytes: sentence-transformers' fast GPU path
(`model_kwargs={"dtype": torch.float16}`) is this one.
"""

import contextlib

import torch

HALF_WEIGHTS = {"fp16-weights": torch.float16, "bf16-weights": torch.bfloat16}


def check_half_weights(precision: str, device_type: str) -> None:
    """Refuse fp16 weights on a CPU in one line: they run there, but no faster than fp32 (all-MiniLM-L6-v2's shape,
    batch 64 × 40 tokens on this project's 2-core AVX-512 BF16 CPU: 1.02 s fp16 against 1.05 s fp32 a batch, where
    bf16 weights took 0.77 s), and fp16's narrow range is only worth risking for speed."""
    if precision == "fp16-weights" and device_type == "cpu":
        raise ValueError(
            "precision='fp16-weights' is for GPUs: on a CPU fp16 matmuls run no faster than fp32; use "
            "'bf16-weights', 'bf16' or 'fp32'."
        )


@contextlib.contextmanager
def half_encoder_weights(model, dtype: torch.dtype):
    """Within the block, `model.encoder`'s floating-point parameters and persistent buffers hold `dtype` copies; on leaving it
    (an error included), each gets its own fp32 tensor back: the same storage, bitwise unchanged, so a model trained
    elsewhere is never left in half precision. The originals are kept, not copied: the encoder takes 1.5× its fp32
    memory during the call (a cast copy of the whole model would take 2×; casting in place and back would round the
    weights). The projection and the heads are not the encoder's: they stay fp32.

    Call outside `torch.inference_mode()`: the half copies made there would be inference tensors, and so would a
    parameter they were assigned to, were one ever left behind."""
    originals = []
    try:
        with torch.no_grad():
            for tensor in _floating_tensors(model.encoder):
                originals.append((tensor, tensor.data))
                tensor.data = tensor.data.to(dtype)
        yield model
    finally:
        for tensor, data in originals:
            tensor.data = data


def _floating_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Each floating-point parameter and persistent buffer once (tied weights are one parameter). Non-persistent
    buffers are computed, not loaded — rotary embeddings' inverse frequencies — and stay fp32, as a model loaded in
    half precision keeps them (found in review: bf16 angles were 0.025 rad off at position 511)."""
    buffers = [
        buffer
        for part in module.modules()
        for name, buffer in part.named_buffers(recurse=False)
        if name not in part._non_persistent_buffers_set
    ]
    seen, tensors = set(), []
    for tensor in [*module.parameters(), *buffers]:
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            tensors.append(tensor)
    return tensors
