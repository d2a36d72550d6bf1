"""sentmtl/training/param_groups.py: every trainable parameter in one group, the layer-wise LRs (LLRD, a head's
own), frozen parameters left out, weight decay, merging. A resumed checkpoint's groups checked:
tests/e2e/test_run_mtl.py."""

import pytest
from helpers import ALL_TYPES, training_args

import sentmtl
from sentmtl.training.arguments import SentMtlTrainingArguments
from sentmtl.training.param_groups import build_param_groups, merge_param_groups


def test_every_trainable_parameter_in_exactly_one_group(tiny_model, tmp_path):
    groups = build_param_groups(tiny_model, training_args(tmp_path, weight_decay=0.01))
    ids = [id(p) for group in groups for p in group["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in tiny_model.parameters()}
    for group in groups:
        expected = 0.0 if group["name"].endswith("no_decay") else 0.01
        assert group["weight_decay"] == expected
        assert all((p.ndim < 2) == group["name"].endswith("no_decay") for p in group["params"])


def test_groups_take_the_requested_learning_rates(tiny_model, tmp_path):
    args = training_args(tmp_path, backbone_learning_rate=1e-5, shared_learning_rate=2e-5, head_learning_rate=3e-5)
    lr = {group["name"]: group["lr"] for group in build_param_groups(tiny_model, args)}
    assert lr["backbone.layer1"] == lr["backbone.layer2"] == lr["backbone.embeddings"] == 1e-5
    assert lr["shared_projection"] == 2e-5 and lr["heads"] == 3e-5
    args = training_args(tmp_path, learning_rate=4e-5, shared_learning_rate=None, head_learning_rate=None)
    uniform = {group["lr"] for group in build_param_groups(tiny_model, args)}
    assert uniform == {4e-5}  # unset layer-wise LRs fall back to --learning_rate: the seed's uniform run


def test_llrd_decays_downwards(tiny_model, tmp_path):
    args = training_args(tmp_path, backbone_learning_rate=1e-4, layerwise_lr_decay=0.5)
    lr = {group["name"]: group["lr"] for group in build_param_groups(tiny_model, args)}
    # 2 layers: layer2 = 1e-4, layer1 = 1e-4 * 0.5, embeddings = 1e-4 * 0.5^2
    assert lr["backbone.layer2"] == pytest.approx(1e-4)
    assert lr["backbone.layer1"] == pytest.approx(5e-5)
    assert lr["backbone.embeddings"] == pytest.approx(2.5e-5)


def test_frozen_parameters_are_left_out(tiny_model, tmp_path):
    tiny_model.freeze("backbone")
    names = {group["name"] for group in build_param_groups(tiny_model, training_args(tmp_path))}
    assert not any(name.startswith("backbone") for name in names)
    # ... unless the backbone is scheduled to unfreeze, when it must already be in the optimizer.
    args = training_args(tmp_path, freeze="backbone", unfreeze_backbone_at_epoch=1)
    assert any(g["name"].startswith("backbone") for g in build_param_groups(tiny_model, args))


def test_freeze_a_task_head_and_give_a_head_its_own_lr(tiny_encoder_dir, tmp_path):
    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, tasks=ALL_TYPES[:3])
    args = SentMtlTrainingArguments(output_dir=str(tmp_path), use_cpu=True, head_learning_rate=1e-4)
    lr = {group["name"]: group["lr"] for group in build_param_groups(model, args, head_learning_rates={"tags": 3e-3})}
    assert lr["heads.tags"] == 3e-3 and lr["heads"] == 1e-4
    model.freeze("tags_head")
    assert not model.tags_head.weight.requires_grad and model.sentiment3_head.weight.requires_grad
    with pytest.raises(ValueError, match="cannot freeze 'nope_head'; choose one of all, backbone, sentiment3_head"):
        model.freeze("nope_head")


def test_merged_groups_hold_each_parameter_once_with_its_lr_and_decay(tiny_model, tmp_path):
    args = training_args(tmp_path, backbone_learning_rate=1e-4, layerwise_lr_decay=0.5, weight_decay=0.01)
    groups = build_param_groups(tiny_model, args)
    merged = merge_param_groups(groups)
    assert len(merged) == len({(g["lr"], g["weight_decay"]) for g in groups}) < len(groups)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    after = {id(p): (g["lr"], g["weight_decay"]) for g in merged for p in g["params"]}
    assert after == setting and sum(len(g["params"]) for g in merged) == len(setting)
    assert sorted(name for g in merged for name in g["members"]) == sorted(g["name"] for g in groups)
