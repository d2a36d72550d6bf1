"""sentmtl/model/configuration_sentmtl.py: SentMtlConfig checks what it is given when it is read (pooling,
weighting, sizes, Matryoshka), and a config.json saved before tasks existed still loads."""

import json

import pytest
import torch

import sentmtl
from sentmtl import SentMtlConfig


@pytest.mark.parametrize(
    "field, value, accepted",
    [
        ("pooling", "max", "mean, cls, pooler"),
        ("loss_weighting", "learned", "static, uncertainty"),
        ("embedding_size", 0, "positive integer"),
        ("dropout", 1.5, "[0, 1)"),
        ("projection_init", "xavier", "random, identity"),
        ("sentiment_loss_weight", -1.0, ">= 0"),
    ],
)
def test_invalid_config_values_raise_naming_value_and_choices(field, value, accepted):
    with pytest.raises(ValueError) as err:
        SentMtlConfig(**{field: value})
    assert repr(value) in str(err.value) and accepted in str(err.value)


def test_pooler_mode_rejected_for_encoders_without_pooler():
    with pytest.raises(ValueError, match="'distilbert' has none"):
        SentMtlConfig(encoder_config={"model_type": "distilbert"}, pooling="pooler")


def test_matryoshka_config_is_checked_when_read():
    tasks = [{"name": "d", "type": "distillation", "loss": "cosine"}]
    with pytest.raises(ValueError, match="d \\(loss cosine\\) cannot be taken on a truncated embedding"):
        SentMtlConfig(tasks=tasks, embedding_size=32, matryoshka_dims=[32, 8])
    with pytest.raises(ValueError, match="distinct integers in 1 … embedding_size \\(32\\)"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[64, 8])
    with pytest.raises(ValueError, match="one non-negative weight per dimension"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8], matryoshka_weights=[1.0])
    assert SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8]).matryoshka() == [(32, 1.0), (8, 1.0)]


def test_matryoshka_self_distillation_is_checked_when_read():
    with pytest.raises(ValueError, match="matryoshka_self_distillation without matryoshka_dims"):
        SentMtlConfig(embedding_size=32, matryoshka_self_distillation=1.0)
    with pytest.raises(ValueError, match="matryoshka_self_distillation=-1.0 must be a finite number >= 0"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8], matryoshka_self_distillation=-1.0)
    with pytest.raises(ValueError, match="needs a size below the embedding's \\(32\\) with a weight above 0"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32], matryoshka_self_distillation=1.0)
    with pytest.raises(ValueError, match="needs a size below the embedding's \\(32\\) with a weight above 0"):
        SentMtlConfig(
            embedding_size=32, matryoshka_dims=[32, 8], matryoshka_weights=[1.0, 0.0], matryoshka_self_distillation=1.0
        )
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8], matryoshka_self_distillation=float("inf"))
    assert (
        SentMtlConfig(
            embedding_size=32, matryoshka_dims=[32, 8], matryoshka_self_distillation=2
        ).matryoshka_self_distillation
        == 2.0
    )


def test_a_checkpoint_saved_before_tasks_still_loads(tiny_encoder_dir, tmp_path):
    """config.json without `tasks` / `head_logit_scale`, heads named classification_head / sentiment_head."""
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("tasks", "head_logit_scale"):
        config.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = sentmtl.load_model_and_tokenizer(str(tmp_path))
    assert [t.name for t in loaded.tasks] == ["classification", "sentiment"]
    assert loaded.classification_head.logit_scale is None
    torch.testing.assert_close(loaded.classification_head.weight, model.classification_head.weight)
