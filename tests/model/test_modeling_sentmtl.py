"""sentmtl/model/modeling_sentmtl.py: the forward (shapes, unit norm, every task type's loss, masks, batches without
a target), the loss weighting, pooling against padding, the projection, Matryoshka prefixes, save / load through
AutoModel without trust_remote_code. A folder trained by a run (its code files, auto_map, the pipeline view):
tests/e2e/test_run_mtl.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ALL_TYPES, distinct_ids, model_with, padded_batch
from transformers import (
    AutoConfig,
    AutoModel,
    BertConfig,
    BertModel,
    ElectraConfig,
    ElectraModel,
)

import sentmtl
from sentmtl import SentMtlConfig, SentMtlModel
from sentmtl.model.task_spec import TaskSpec
from sentmtl.model.task_types import TaskInputs, in_batch_negatives_loss, relational_distillation_loss

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


@pytest.mark.parametrize("normalize", [True, False])
def test_the_distillation_loss_reads_the_cosines_whether_or_not_the_model_normalises(
    tiny_encoder_dir, tiny_tokenizer, normalize
):
    """Issue 33: a normalising model tells the relational loss its embeddings are unit rows (no second
    normalisation); one that does not normalise leaves the loss to do it. The loss is the cosines' either way."""
    from sentmtl.model.task_spec import default_tasks

    torch.manual_seed(0)
    model = SentMtlModel.from_encoder(
        str(tiny_encoder_dir), embedding_size=16, normalize=normalize, tasks=default_tasks(distillation_weight=1.0)
    ).eval()
    teacher = torch.randn(2, 24)
    out = model(**batch(tiny_tokenizer), task_labels={"distillation": teacher})
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(2)) == normalize
    expected = relational_distillation_loss(F.normalize(out.embeddings, dim=-1), teacher)
    torch.testing.assert_close(out.task_losses["distillation"], expected)


def test_the_default_tasks_train_under_torch_compile_with_dynamic_shapes(tiny_encoder_dir, tiny_tokenizer):
    """The embeddings' normalisation is an autograd function (`losses._L2Normalize`): compiled with dynamic shapes,
    forward and backward, the default tasks give eager's loss and gradients. (Its eps, read as a global, once became
    a graph input that the function's own graph could not see.)"""
    import copy

    from sentmtl.model.task_spec import default_tasks

    torch.manual_seed(0)
    model = SentMtlModel.from_encoder(
        str(tiny_encoder_dir), embedding_size=16, tasks=default_tasks(distillation_weight=10.0)
    ).eval()
    labels = {"classification": torch.tensor([1, 0]), "sentiment": torch.tensor([0.9, 0.1])}
    labels["distillation"] = torch.randn(2, 24)
    compiled = torch.compile(copy.deepcopy(model), backend="aot_eager", dynamic=True)
    losses = []
    for net in (model, compiled):
        loss = net(**batch(tiny_tokenizer), task_labels=labels).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0])
    weight = compiled.shared_projection.weight.grad  # the compiled module's own parameters
    torch.testing.assert_close(weight, model.shared_projection.weight.grad)


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


def test_complete_tasks_tasks_give_the_masked_losses_and_are_not_read_under_ddp(
    tiny_model, tiny_tokenizer, monkeypatch
):
    """`complete_tasks` (from the collator) swaps the masked means for plain ones: the same losses. Under DDP the
    losses are taken over the gathered batch, whose other rows this process has not seen: the flag is not read."""
    import sentmtl.model.modeling_sentmtl as modeling
    from sentmtl.model.task_types import Score

    tiny_model.eval()
    labels = {"classification": torch.tensor([1, 0]), "sentiment": torch.tensor([1.0, 0.2])}
    masked = tiny_model(**batch(tiny_tokenizer), task_labels=labels)
    plain = tiny_model(**batch(tiny_tokenizer), task_labels=labels, complete_tasks=("classification", "sentiment"))
    for name in labels:
        torch.testing.assert_close(plain.task_losses[name], masked.task_losses[name])
    calls = []
    monkeypatch.setattr(
        Score, "loss", lambda self, spec, output, targets, **options: calls.append(options) or 0 * output.sum()
    )
    tiny_model.train()
    monkeypatch.setattr(modeling, "world", lambda: (2, 0))
    monkeypatch.setattr(modeling, "gather_rows", lambda tensor: tensor)
    monkeypatch.setattr(modeling, "scale_for_ddp", lambda loss: loss)
    tiny_model(**batch(tiny_tokenizer), task_labels=labels, complete_tasks=("sentiment",))
    monkeypatch.setattr(modeling, "world", lambda: (1, 0))
    tiny_model(**batch(tiny_tokenizer), task_labels=labels, complete_tasks=("sentiment",))
    assert calls == [{}, {"complete": True}]


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


def test_uncertainty_weighting_formula_away_from_zero(tiny_encoder_dir, tiny_tokenizer):
    """The old test only checked s = 0, where exp(-s) = 1 and the formula cannot be told from a plain sum."""
    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, loss_weighting="uncertainty")
    with torch.no_grad():
        model.loss_log_variances.copy_(torch.tensor([0.7, -1.3]))
    la, lb = torch.tensor(0.4), torch.tensor(0.9)
    expected = np.exp(-0.7) * 0.4 + 0.35 + np.exp(1.3) * 0.9 - 0.65
    assert model.combine_losses({"classification": la, "sentiment": lb}).item() == pytest.approx(expected, rel=1e-5)
    assert model.combine_losses({"sentiment": lb}).item() == pytest.approx(np.exp(1.3) * 0.9 - 0.65, rel=1e-5)


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


def test_the_model_checkpoints_its_encoders_layers(tiny_mpnet_dir, tiny_encoder_dir):
    """Through transformers' switch on the BERT layers, sentmtl's on the MPNet ones (tests/model/test_checkpointing.py
    has the gradients and the refusal), and through the sequence-classification view alike."""
    from sentmtl.model.modeling_sentmtl import SentMtlForSequenceClassification

    mpnet = SentMtlModel.from_encoder(str(tiny_mpnet_dir))
    bert = SentMtlModel.from_encoder(str(tiny_encoder_dir))
    for model in (mpnet, SentMtlForSequenceClassification(mpnet.config), bert):
        model.activation_checkpointing_enable()
        encoder = model._sentmtl_encoder()
        assert model.is_activation_checkpointing and all(
            layer.gradient_checkpointing for layer in encoder.encoder.layer
        )
        model.activation_checkpointing_disable()
        assert not model.is_activation_checkpointing and not any(
            layer.gradient_checkpointing for layer in encoder.encoder.layer
        )
    # What counts is a layer with the switch, as transformers reads it, not the class's declaration (MarkupLM's and
    # other text encoders' classes leave it unset).
    bert.encoder.supports_gradient_checkpointing = False
    bert.activation_checkpointing_enable()
    assert bert.is_activation_checkpointing


def test_pooler_is_kept_only_for_pooler_mode(tiny_encoder_dir):
    assert SentMtlModel.from_encoder(str(tiny_encoder_dir), pooling="mean").encoder.pooler is None
    assert SentMtlModel.from_encoder(str(tiny_encoder_dir), pooling="pooler").encoder.pooler is not None


def test_pooler_pooling_is_checked_against_the_loaded_encoder(tmp_path, tiny_tokenizer):
    """`--pooling pooler` passed validation for ELECTRA (no pooler) and then crashed in the first forward pass."""
    small = dict(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    ElectraModel(ElectraConfig(embedding_size=32, **small)).save_pretrained(tmp_path / "electra")
    with pytest.raises(ValueError, match="pooling='pooler' needs an encoder with a pooler layer"):
        sentmtl.SentMtlModel.from_encoder(str(tmp_path / "electra"), pooling="pooler")
    # The model checks the encoder object itself, not only the config's model type.
    encoder = BertModel(BertConfig(**small), add_pooling_layer=False)
    config = sentmtl.SentMtlConfig(encoder_config=encoder.config.to_dict(), pooling="pooler")
    with pytest.raises(ValueError, match="this BertModel has none"):
        sentmtl.SentMtlModel(config, encoder=encoder)


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


FOUR_SENTENCES = ["the food was great .", "the service was bad .", "it was fine .", "the price was poor ."]


def all_types_targets():
    """A target of every task type of ALL_TYPES for FOUR_SENTENCES."""
    return {
        "sentiment3": torch.tensor([2, 0, 1, 0]),
        "tags": torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]]),
        "rating": torch.tensor([1.0, 0.0, 0.5, 0.1]),
        "stars": torch.tensor([4.5, 1.0, 3.0, 2.0]),
        "paraphrase": torch.tensor([0.2, 0.9, 0.9, 0.2]),
        "keep": torch.randn(4, 32),  # the teacher's pooled vectors (hidden 32)
    }


@pytest.fixture
def all_types_model(tiny_encoder_dir):
    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=ALL_TYPES, head_logit_scale=20.0
    )
    return model, tokenizer


def test_every_task_type_builds_its_head_and_computes_its_loss(all_types_model):
    model, tokenizer = all_types_model
    batch = padded_batch(tokenizer, FOUR_SENTENCES)
    pair = {f"pair_{k}": v for k, v in padded_batch(tokenizer, FOUR_SENTENCES[::-1]).items()}
    assert model.sentiment3_head.out_features == 3 and model.tags_head.out_features == 3
    assert not hasattr(model, "paraphrase_head") and not hasattr(model, "keep_head")  # they train the embedding
    targets = all_types_targets()
    out = model(**batch, **pair, task_labels=targets)
    assert set(out.task_losses) == set(targets)
    assert all(torch.isfinite(loss) for loss in out.task_losses.values())
    torch.testing.assert_close(out.loss, sum(out.task_losses.values()))  # static weights 1.0
    torch.testing.assert_close(out.logits, out.task_logits["sentiment3"])  # the first classification task
    out.loss.backward()
    assert model.shared_projection.weight.grad is not None and model.tags_head.weight.grad is not None


def test_padding_to_a_multiple_changes_no_tasks_loss(all_types_model):
    """--pad_to_multiple_of pads batches past their longest row (one kernel shape per band of lengths): every task
    type's loss, pair inputs included, reads the attention mask, so only float rounding may differ."""
    model, tokenizer = all_types_model
    model.eval()  # dropout off: both forwards compute the same function
    targets = all_types_targets()

    def losses(multiple):
        def tokens(texts):
            return dict(tokenizer(texts, padding=True, pad_to_multiple_of=multiple, return_tensors="pt"))

        batch, pair = tokens(FOUR_SENTENCES), tokens(FOUR_SENTENCES[::-1])
        with torch.no_grad():
            out = model(**batch, **{f"pair_{k}": v for k, v in pair.items()}, task_labels=targets)
        return batch["input_ids"].shape[1], out.task_losses

    (longest, exact), (padded, rounded) = losses(None), losses(16)
    assert longest < padded == 16  # the multiple did pad past the longest row
    assert set(exact) == set(targets)
    for name in targets:
        torch.testing.assert_close(rounded[name], exact[name], atol=1e-5, rtol=1e-4, msg=name)


def test_only_the_tasks_in_the_batch_are_computed(all_types_model):
    model, tokenizer = all_types_model
    out = model(
        **padded_batch(tokenizer, ["the food was great .", "bad ."]), task_labels={"stars": torch.tensor([5.0, 1.0])}
    )
    assert set(out.task_losses) == {"stars"}
    torch.testing.assert_close(out.loss, out.task_losses["stars"])
    model.zero_grad()
    out.loss.backward()
    assert model.sentiment3_head.weight.grad is None  # not zero-padded: never part of the graph


def test_absent_targets_are_masked(all_types_model):
    """-100 (class ids) and NaN (everything else) mark an example without a target for that task."""
    model, tokenizer = all_types_model
    model.eval()
    batch = padded_batch(tokenizer, ["the food was great .", "bad .", "fine ."])
    full = model(
        **batch,
        task_labels={"sentiment3": torch.tensor([2, 0, -100]), "rating": torch.tensor([1.0, 0.0, float("nan")])},
    )
    part = model(
        **{k: v[:2] for k, v in batch.items()},
        task_labels={"sentiment3": torch.tensor([2, 0]), "rating": torch.tensor([1.0, 0.0])},
    )
    torch.testing.assert_close(full.task_losses["sentiment3"], part.task_losses["sentiment3"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(full.task_losses["rating"], part.task_losses["rating"], rtol=1e-4, atol=1e-5)


@pytest.fixture
def four_types_model(tiny_encoder_dir):
    tasks = [
        TaskSpec("sentiment3", "classification", labels=["neg", "mid", "pos"]),
        TaskSpec("tags", "multilabel", labels=["food", "service"]),
        TaskSpec("rating", "score"),
        TaskSpec("stars", "regression"),
    ]
    return model_with(tiny_encoder_dir, tasks)


def test_a_batch_where_no_row_has_a_tasks_target_trains_on(four_types_model):
    """Issue #20, item 11: a batch in which no row has a task's target trains on (zero loss, finite gradients)."""
    model, tokenizer = four_types_model
    batch = tokenizer(["the food was great .", "bad ."], padding=True, return_tensors="pt")
    nan = float("nan")
    targets = {
        "sentiment3": torch.tensor([-100, -100]),
        "tags": torch.full((2, 2), nan),
        "rating": torch.tensor([nan, nan]),
        "stars": torch.tensor([nan, nan]),
    }
    out = model(**batch, task_labels=targets)
    assert torch.isfinite(out.loss) and all(float(v) == 0.0 for v in out.task_losses.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_batch_without_a_tasks_target_leaves_its_learned_weight_alone(tiny_encoder_dir):
    """Found reviewing the #20 change: a batch without a task's target gives its learned loss weight no gradient."""
    tasks = [TaskSpec("cls", "classification", labels=["neg", "pos"]), TaskSpec("sc", "score")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks, loss_weighting="uncertainty")
    batch = tokenizer(["the film was good .", "bad ."], padding=True, return_tensors="pt")
    out = model(**batch, task_labels={"cls": torch.tensor([1, 0]), "sc": torch.tensor([float("nan")] * 2)})
    out.loss.backward()
    assert model.loss_log_variances.grad[1] == 0.0 and model.loss_log_variances.grad[0] != 0.0


def test_contrastive_output_and_the_model_forward_with_hard_negatives(tiny_model, tiny_tokenizer):
    tiny_model.config.tasks = [TaskSpec("retrieval", "contrastive").to_dict()]
    batch = tiny_tokenizer(["the film was good ."] * 3, return_tensors="pt")
    pair = tiny_tokenizer(
        ["the movie was great .", "the food was bad .", "the plot was boring ."], padding=True, return_tensors="pt"
    )
    negatives = tiny_tokenizer(["the phone was broken ."] * 6, return_tensors="pt")
    out = tiny_model(
        **batch,
        pair_input_ids=pair["input_ids"],
        pair_attention_mask=pair["attention_mask"],
        negative_input_ids=negatives["input_ids"].reshape(3, 2, -1),
        negative_attention_mask=negatives["attention_mask"].reshape(3, 2, -1),
        task_labels={"retrieval": torch.tensor([[1, 0, 1, 2, 2], [1, 3, 4, 2, 2], [1, 5, 6, 2, 2]])},
    )
    assert out.task_outputs["retrieval"].shape == (3, 4, 16)
    assert out.loss.requires_grad and torch.isfinite(out.loss)


def test_matryoshka_loss_is_the_weighted_mean_over_prefixes(tiny_model, tiny_tokenizer):
    tiny_model.eval()  # no dropout: the three forwards below must see the same embeddings
    tiny_model.config.tasks = [TaskSpec("retrieval", "contrastive").to_dict()]
    texts = ["the film was good .", "the food was bad .", "the plot was boring .", "the phone was fine ."]
    batch = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    pair = tiny_tokenizer(texts[1:] + texts[:1], padding=True, return_tensors="pt")
    inputs = dict(
        **batch,
        pair_input_ids=pair["input_ids"],
        pair_attention_mask=pair["attention_mask"],
        task_labels={"retrieval": distinct_ids(4)},
    )
    with torch.no_grad():
        plain = tiny_model(**inputs)
        tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_weights = [16, 4], [1.0, 3.0]
        both = tiny_model(**inputs)
    a, p = plain.embeddings, plain.pair_embeddings
    small = in_batch_negatives_loss(
        torch.stack([F.normalize(a[:, :4], dim=-1), F.normalize(p[:, :4], dim=-1)], 1), distinct_ids(4)
    )
    assert float(both.loss) == pytest.approx((float(plain.loss) + 3 * float(small)) / 4, rel=1e-5)
    assert float(small) != pytest.approx(float(plain.loss), rel=1e-3)  # the prefix loss is a different number
    # TaskInputs.truncated: the same prefix, re-normalised.
    cut = TaskInputs(a, p).truncated(4)
    torch.testing.assert_close(cut.embeddings, F.normalize(a[:, :4], dim=-1))


def test_a_task_with_matryoshka_false_keeps_its_loss_on_the_full_embedding(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    texts = ["the film was good .", "the food was bad .", "the plot was boring .", "the phone was fine ."]
    batch = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    teacher = torch.randn(4, 24, generator=torch.Generator().manual_seed(0))
    tasks = lambda on: [TaskSpec("d", "distillation", matryoshka=on).to_dict()]  # noqa: E731
    with torch.no_grad():
        tiny_model.config.tasks = tasks(True)
        plain = float(tiny_model(**batch, task_labels={"d": teacher}).loss)  # no matryoshka_dims yet
        tiny_model.config.matryoshka_dims = [16, 4]
        prefixes = float(tiny_model(**batch, task_labels={"d": teacher}).loss)
        tiny_model.config.tasks = tasks(False)
        full_only = float(tiny_model(**batch, task_labels={"d": teacher}).loss)
    assert prefixes != pytest.approx(plain, rel=1e-3)  # the flag's default: the prefixes count
    assert full_only == pytest.approx(plain, rel=1e-6)  # matryoshka: false: the full embedding only
    # A cosine distillation, refused on the prefixes, is accepted on the full embedding only.
    config = SentMtlConfig(
        tasks=[{"name": "d", "type": "distillation", "loss": "cosine", "matryoshka": False}],
        embedding_size=32,
        matryoshka_dims=[32, 8],
    )
    assert not config.task_specs[0].on_prefixes


def test_matryoshka_self_distillation_adds_the_prefixes_against_the_full_embedding(tiny_model, tiny_tokenizer):
    from sentmtl.model.task_types import prefix_self_distillation_loss

    tiny_model.eval()
    # The task's own loss weighs 0, so the term is the whole loss (a small number, not lost in a larger one's rounding).
    tiny_model.config.tasks = [TaskSpec("sts", "similarity", loss_weight=0.0).to_dict()]
    texts = ["the film was good .", "the food was bad .", "the plot was boring .", "the phone was fine ."]
    batch = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    pair = tiny_tokenizer(texts[1:] + texts[:1], padding=True, return_tensors="pt")
    inputs = dict(
        **batch,
        pair_input_ids=pair["input_ids"],
        pair_attention_mask=pair["attention_mask"],
        task_labels={"sts": torch.tensor([0.1, 0.9, 0.4, 0.7])},
    )
    size = tiny_model.config.embedding_size
    with torch.no_grad():
        tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_weights = [size, 8, 4], [1.0, 1.0, 3.0]
        without = tiny_model(**inputs)
        tiny_model.config.matryoshka_self_distillation = 5.0
        with_term = tiny_model(**inputs)
    rows = torch.cat([without.embeddings, without.pair_embeddings])  # every sentence of the batch, both sides
    by_hand = (
        relational_distillation_loss(rows[:, :8], rows) + 3 * relational_distillation_loss(rows[:, :4], rows)
    ) / 4
    assert float(without.loss) == 0 and float(by_hand) > 0
    assert float(with_term.loss) == pytest.approx(5 * float(by_hand), rel=1e-5)
    # The full embedding is the teacher, held fixed: no gradient reaches the dimensions past the longest prefix.
    embeddings = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=-1).requires_grad_()
    prefix_self_distillation_loss(embeddings, [(16, 1.0), (8, 1.0), (4, 1.0)]).backward()
    assert embeddings.grad[:, 8:].abs().max() == 0 and embeddings.grad[:, :8].abs().max() > 0


def test_local_checkpoints_need_no_trust_remote_code(tiny_model, tiny_tokenizer, tmp_path):
    from transformers import AutoModel

    tiny_model.save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is sentmtl.SentMtlModel  # trust_remote_code left at its default
