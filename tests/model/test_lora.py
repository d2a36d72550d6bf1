"""sentmtl/model/lora.py: LoRA adapters on tiny random BERT, MPNet, RoBERTa and DistilBERT encoders — which layers
the defaults adapt (and which architectures they refuse), what trains, the layer-wise groups, the adapter folder and
the merged model, and the base encoder an adapter folder must find."""

import json
import shutil

import pytest
import torch
from helpers import SHARING_SENTENCES, encoder_dir, padded_batch
from safetensors.torch import load_file
from transformers import AutoModel, BertModel

import sentmtl
from sentmtl.model.lora import ADAPTER_FOLDER, is_base_weight
from sentmtl.model.modeling_sentmtl import SentMtlForSequenceClassification, SentMtlModel
from sentmtl.training.param_groups import build_param_groups


@pytest.fixture
def lora_model(tiny_encoder_dir):
    """The tiny BERT with r=4 adapters whose B is far from its zero start, so a lost adapter would show."""
    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, tokenizer


@pytest.mark.parametrize(
    ("kind", "targets", "per_layer"),
    [("bert", ["query", "key", "value", "dense"], 6), ("mpnet", ["q", "k", "v", "o", "dense"], 6),
     ("roberta", ["query", "key", "value", "dense"], 6)],
)  # fmt: skip
def test_the_default_targets_adapt_every_attention_and_feed_forward_projection(
    tmp_path, tiny_encoder_dir, kind, targets, per_layer
):
    torch.manual_seed(0)
    model, _ = sentmtl.load_model_and_tokenizer(
        str(encoder_dir(tmp_path, kind, tiny_encoder_dir)), embedding_size=16, lora={"r": 4}
    )
    assert model.config.lora["target_modules"] == targets  # the names that matched, so the config rebuilds them
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    assert len(adapted) == 2 * per_layer  # 2 layers × (3 attention projections, its output, 2 feed-forward)
    # Only the adapters train in the encoder; the projection and every head train fully.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in name for name in trainable if name.startswith("encoder."))
    assert {"shared_projection.weight", "classification_head.weight", "sentiment_head.weight"} <= trainable
    counted, total = model.count_parameters()
    assert counted == sum(p.numel() for name, p in model.named_parameters() if name in trainable)
    assert total == sum(p.numel() for p in model.parameters()) and counted < total / 2


def test_an_architecture_outside_the_defaults_is_named_with_the_flag_to_set(tmp_path, tiny_encoder_dir):
    path = encoder_dir(tmp_path, "distilbert", tiny_encoder_dir)
    with pytest.raises(
        ValueError, match=r"distilbert encoder \(k_lin lin1 lin2 out_lin q_lin v_lin\).*--lora_target_modules"
    ):
        sentmtl.load_model_and_tokenizer(str(path), embedding_size=16, lora={"r": 4})
    model, _ = sentmtl.load_model_and_tokenizer(
        str(path), embedding_size=16, lora={"r": 4, "target_modules": ["q_lin", "v_lin"]}
    )
    assert sum(".lora_A." in name for name, _ in model.named_parameters()) == 4  # 2 layers × q_lin, v_lin


def test_a_target_name_that_matches_nothing_is_refused(tiny_encoder_dir):
    with pytest.raises(ValueError, match=r"--lora_target_modules q_lin: no linear layer of this bert encoder.*query"):
        sentmtl.load_model_and_tokenizer(
            str(tiny_encoder_dir), embedding_size=16, lora={"r": 4, "target_modules": ["query", "q_lin"]}
        )


@pytest.mark.parametrize(
    ("lora", "message"),
    [({"r": 0}, "--lora_r 0 must be a positive integer"), ({"r": 4, "alpha": 0}, "--lora_alpha 0 must be"),
     ({"r": 4, "dropout": 1.0}, r"--lora_dropout 1.0 must be in \[0, 1\)"), ({"r": 4, "rank": 2}, "a dict with r")],
)  # fmt: skip
def test_bad_settings_are_refused_by_the_config(tiny_encoder_dir, lora, message):
    with pytest.raises(ValueError, match=message):
        sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora=lora)


def test_fresh_adapters_leave_the_model_as_it_was(tiny_encoder_dir, tiny_tokenizer):
    """B starts at 0 (post_init must not re-initialise it): a fresh LoRA model embeds as the plain model does."""
    torch.manual_seed(0)
    plain, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
    torch.manual_seed(0)
    adapted, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    batch = padded_batch(tiny_tokenizer, SHARING_SENTENCES)
    plain.eval(), adapted.eval()
    torch.testing.assert_close(adapted(**batch).embeddings, plain(**batch).embeddings)


def test_an_adapter_takes_the_learning_rate_of_its_encoder_layer(lora_model):
    model, _ = lora_model
    groups = {part.name: part for part in model.parameter_groups()}
    for k in (1, 2):
        names = [name for name, _ in groups[f"backbone.layer{k}"].params if "lora_" in name]
        assert names and all(f"encoder.layer.{k - 1}." in name for name in names)

    class Args:
        layerwise_lr_decay, weight_decay = 0.5, 0.01

        def learning_rates(self):
            return {"backbone": 1e-3, "shared": 2e-4, "head": 2e-4, "loss_weighting": 1e-2}

    built = {group["name"]: group for group in build_param_groups(model, Args())}
    # Layer k of L=2 at 1e-3 × 0.5^(2-k); frozen base weights are in no group, the embeddings' group is empty.
    assert built["backbone.layer2"]["lr"] == 1e-3 and built["backbone.layer1"]["lr"] == 5e-4
    assert all(all(p.requires_grad for p in group["params"]) for group in built.values())
    assert "backbone.embeddings" not in built


def test_freezing_the_lowest_layers_freezes_their_adapters_and_leaves_the_rest_training(lora_model):
    """--freeze_backbone_layers K with LoRA: the base encoder stays frozen, the adapters of layers below K stop."""
    model, _ = lora_model
    model.freeze_lower_backbone(1)
    adapters = {name: p.requires_grad for name, p in model.named_parameters() if "lora_" in name}
    assert adapters and all(not trains for name, trains in adapters.items() if "encoder.layer.0." in name)
    assert all(trains for name, trains in adapters.items() if "encoder.layer.0." not in name)
    assert not any(p.requires_grad for name, p in model.named_parameters() if is_base_weight(name))
    assert all(p.requires_grad for p in model.shared_projection.parameters())


def test_the_adapter_folder_and_the_merged_model_load_to_the_same_embeddings(lora_model, tmp_path):
    model, tokenizer = lora_model
    batch = padded_batch(tokenizer, SHARING_SENTENCES)
    want = model.eval()(**batch).embeddings
    adapter = tmp_path / "adapter-folder"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    saved = load_file(adapter / "model.safetensors")
    assert not any(is_base_weight(key) for key in saved)  # the encoder's own weights come from its base
    assert any("lora_B" in key for key in saved) and "shared_projection.weight" in saved
    assert (adapter / ADAPTER_FOLDER / "adapter_config.json").is_file()
    assert json.loads((adapter / "config.json").read_text())["lora"]["r"] == 4

    for loaded in (
        SentMtlModel.from_pretrained(adapter),
        sentmtl.load_model_and_tokenizer(str(adapter))[0],
        AutoModel.from_pretrained(adapter),
    ):
        torch.testing.assert_close(loaded(**batch).embeddings, want)
        assert loaded.config.name_or_path == str(adapter)  # as any checkpoint names its folder (the miner reads it)
    view = SentMtlForSequenceClassification.from_pretrained(adapter)
    torch.testing.assert_close(view(**batch).logits, model(**batch).logits)

    merged = SentMtlModel.from_pretrained(adapter)
    merged.merge_lora()
    assert merged.config.lora is None and not any("lora_" in name for name, _ in merged.named_parameters())
    merged.save_pretrained(tmp_path / "merged")
    assert not (tmp_path / "merged" / ADAPTER_FOLDER).exists()
    reloaded = SentMtlModel.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(reloaded(**batch).embeddings, want, atol=1e-5, rtol=1e-5)


def test_the_config_rebuilds_the_adapters(lora_model):
    model, _ = lora_model
    rebuilt = SentMtlModel(model.config)
    rebuilt.load_state_dict(model.state_dict())  # strict: the same modules and names
    assert sorted(rebuilt.state_dict()) == sorted(model.state_dict())


def test_an_adapter_folder_refuses_another_base_encoder(lora_model, tiny_encoder_dir, tmp_path):
    model, tokenizer = lora_model
    adapter = tmp_path / "adapter-folder"
    model.save_pretrained(adapter)
    moved = tmp_path / "base-copy"
    shutil.copytree(tiny_encoder_dir, moved)
    torch.manual_seed(5)
    other = tmp_path / "other"
    BertModel(BertModel.config_class.from_pretrained(tiny_encoder_dir)).save_pretrained(other)
    with pytest.raises(ValueError, match=r"trained on the encoder .*; .*other has other weights"):
        SentMtlModel.from_pretrained(adapter, base_encoder=str(other))
    # The same weights elsewhere are the same base.
    loaded = SentMtlModel.from_pretrained(adapter, base_encoder=str(moved))
    batch = padded_batch(tokenizer, SHARING_SENTENCES)
    torch.testing.assert_close(loaded(**batch).embeddings, model.eval()(**batch).embeddings)
    with pytest.raises(ValueError, match=r"loads without \['dtype'\]"):
        SentMtlModel.from_pretrained(adapter, dtype=torch.bfloat16)
