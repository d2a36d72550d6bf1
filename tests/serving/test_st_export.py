"""sentmtl/serving/st_export.py: pooler pooling has no sentence-transformers equivalent and is refused. The export of
trained models against our embeddings: tests/e2e/test_run_mtl.py."""

import pytest

import sentmtl


def test_export_refuses_pooler_pooling(tiny_encoder_dir, tmp_path):
    from sentmtl.serving.st_export import export_sentence_transformer

    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), pooling="pooler")
    with pytest.raises(ValueError, match="pooling='pooler' has no sentence-transformers equivalent"):
        export_sentence_transformer(model, tokenizer, tmp_path / "st")
