import pytest
import torch
from transformers import AutoConfig, AutoModel

from sentmtl import SentMtlConfig, SentMtlModel
from sentmtl.model.modeling_sentmtl import Pooling

SENTENCES = ["the movie was great !", "the service was really very bad and boring ."]


def batch(tokenizer, sentences=SENTENCES):
    return tokenizer(sentences, padding=True, return_tensors="pt")


def test_output_shapes_and_unit_norm(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    out = tiny_model(**batch(tiny_tokenizer))
    assert out.loss is None
    assert out.logits.shape == (2, 2)
    assert out.sentiment_scores.shape == (2,)
    assert ((out.sentiment_scores >= 0) & (out.sentiment_scores <= 1)).all()
    assert out.embeddings.shape == (2, 16)
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(2))
    assert list(out.keys())[0] == "logits"


def test_combined_loss_is_weighted_sum_of_task_losses(tiny_encoder_dir, tiny_tokenizer):
    model = SentMtlModel.from_encoder(str(tiny_encoder_dir), classification_loss_weight=0.3, sentiment_loss_weight=2.0)
    model.eval()
    out = model(
        **batch(tiny_tokenizer),
        task_labels={"classification": torch.tensor([1, 0]), "sentiment": torch.tensor([1.0, 0.0])},
    )
    assert list(out.keys())[0] == "loss"
    torch.testing.assert_close(out.loss, 0.3 * out.classification_loss + 2.0 * out.sentiment_loss)
    # Task losses are what their definitions say.
    torch.testing.assert_close(
        out.classification_loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 0]))
    )
    expected_bce = -(torch.log(out.sentiment_scores[0]) + torch.log(1 - out.sentiment_scores[1])) / 2
    torch.testing.assert_close(out.sentiment_loss, expected_bce)


def test_one_task_alone_gives_its_own_loss(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    out = tiny_model(**batch(tiny_tokenizer), task_labels={"sentiment": torch.tensor([1.0, 0.0])})
    assert out.classification_loss is None
    torch.testing.assert_close(out.loss, out.sentiment_loss)


def test_uncertainty_weighting_starts_at_plain_sum_and_learns(tiny_encoder_dir, tiny_tokenizer):
    model = SentMtlModel.from_encoder(str(tiny_encoder_dir), loss_weighting="uncertainty")
    model.eval()
    out = model(
        **batch(tiny_tokenizer),
        task_labels={"classification": torch.tensor([1, 0]), "sentiment": torch.tensor([1.0, 0.0])},
    )
    torch.testing.assert_close(out.loss, out.classification_loss + out.sentiment_loss)
    out.loss.backward()
    assert model.loss_log_variances.grad is not None and model.loss_log_variances.grad.abs().sum() > 0


def test_every_parameter_receives_a_gradient(tiny_model, tiny_tokenizer):
    out = tiny_model(
        **batch(tiny_tokenizer),
        task_labels={"classification": torch.tensor([1, 0]), "sentiment": torch.tensor([1.0, 0.0])},
    )
    out.loss.backward()
    missing = [name for name, p in tiny_model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_padding_does_not_change_an_embedding(tiny_encoder_dir, tiny_tokenizer, pooling):
    model = SentMtlModel.from_encoder(str(tiny_encoder_dir), pooling=pooling).eval()
    alone = model(**batch(tiny_tokenizer, SENTENCES[:1])).embeddings[0]
    padded = model(**batch(tiny_tokenizer, SENTENCES)).embeddings[0]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


def test_pooling_modes_compute_what_they_say():
    states = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(Pooling("mean")(states, mask), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    torch.testing.assert_close(Pooling("cls")(states, mask), states[:, 0])
    pooler = torch.randn(2, 2)
    assert Pooling("pooler")(states, mask, pooler) is pooler


def test_pooler_is_kept_only_for_pooler_mode(tiny_encoder_dir):
    assert SentMtlModel.from_encoder(str(tiny_encoder_dir), pooling="mean").encoder.pooler is None
    assert SentMtlModel.from_encoder(str(tiny_encoder_dir), pooling="pooler").encoder.pooler is not None


def test_identity_projection_starts_at_the_encoders_pooled_vector(tiny_encoder_dir, tiny_tokenizer, tmp_path):
    model = SentMtlModel.from_encoder(str(tiny_encoder_dir), embedding_size=32, projection_init="identity").eval()
    inputs = batch(tiny_tokenizer)
    pooled = torch.nn.functional.normalize(model.pool(**inputs), dim=-1)
    torch.testing.assert_close(model(**inputs).embeddings, pooled)
    # Only a fresh model starts there: loading a trained one keeps its trained projection.
    with torch.no_grad():
        model.shared_projection.weight.mul_(2.0)
    model.save_pretrained(tmp_path)
    loaded = SentMtlModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.shared_projection.weight, 2.0 * torch.eye(32), rtol=0, atol=0)


def test_identity_projection_needs_the_hidden_size(tiny_encoder_dir):
    with pytest.raises(ValueError, match=r"hidden size \(32\); got embedding_size=16"):
        SentMtlModel.from_encoder(str(tiny_encoder_dir), embedding_size=16, projection_init="identity")


def test_save_load_round_trip_through_automodel(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.eval()
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "sentmtl"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SentMtlModel)
    inputs = batch(tiny_tokenizer)
    before, after = tiny_model(**inputs), loaded(**inputs)
    torch.testing.assert_close(before.embeddings, after.embeddings, rtol=0, atol=0)
    torch.testing.assert_close(before.logits, after.logits, rtol=0, atol=0)


def test_config_alone_rebuilds_the_model(tiny_model):
    rebuilt = SentMtlModel(SentMtlConfig.from_dict(tiny_model.config.to_dict()))
    missing, unexpected = rebuilt.load_state_dict(tiny_model.state_dict(), strict=True)
    assert (missing, unexpected) == ([], [])


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
