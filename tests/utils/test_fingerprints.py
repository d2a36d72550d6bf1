"""sentmtl/utils/fingerprints.py (`computed_weights_fingerprint`): LoRA adapters that add nothing (B all zero) leave
the key of the weights a module computes with; trained adapters change it."""

import pytest
import torch

import sentmtl
from sentmtl.utils.fingerprints import computed_weights_fingerprint, weights_fingerprint

pytest.importorskip("peft")


def test_fresh_adapters_key_as_their_base_weights_and_trained_ones_do_not(tiny_encoder_dir):
    plain, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
    torch.manual_seed(1)
    adapted, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    torch.manual_seed(2)
    other_seed, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    base = computed_weights_fingerprint(plain.encoder)
    assert base == weights_fingerprint(plain.encoder)  # a module without adapters: its weights, as before
    # Random A, zero B: the same vectors as the plain encoder, whatever the seed, so the same key.
    assert weights_fingerprint(adapted.encoder) != weights_fingerprint(other_seed.encoder)
    assert computed_weights_fingerprint(adapted.encoder) == base == computed_weights_fingerprint(other_seed.encoder)
    lora_b = next(p for name, p in adapted.encoder.named_parameters() if ".lora_B." in name)
    with torch.no_grad():
        lora_b[0, 0] = 1e-3  # one trained step's worth: the adapters now change the vectors
    assert computed_weights_fingerprint(adapted.encoder) not in (base, computed_weights_fingerprint(other_seed.encoder))


def test_adapter_tensors_besides_a_and_b_are_hashed(tiny_encoder_dir):
    """Other adapter tensors (DoRA's magnitude vectors) change the output although B is zero: never dropped."""
    adapted, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    base = computed_weights_fingerprint(adapted.encoder)
    layer = next(m for name, m in adapted.encoder.named_modules() if name.endswith("attention.self.query"))
    magnitude = torch.nn.Module()  # where peft keeps DoRA's (a ModuleDict by adapter name)
    magnitude.weight = torch.nn.Parameter(torch.ones(32))
    layer.lora_magnitude_vector["default"] = magnitude
    assert computed_weights_fingerprint(adapted.encoder) != base
