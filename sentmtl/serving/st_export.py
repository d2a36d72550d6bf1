"""A trained `SentMtlModel` as a sentence-transformers folder: Transformer → Pooling → Dense → Normalize.

The embedding path of the multi-task model is exactly those four modules (the heads are not part of an
embedding), so `SentenceTransformer(folder).encode(...)` gives what `sentmtl.encode` gives.
"""

import numbers
import tempfile
from pathlib import Path

from ..model.lora import merged
from .embed import default_max_length

# sentmtl pooling → sentence-transformers pooling mode. BERT's trained pooler has no sentence-transformers module.
_ST_POOLING = {"mean": "mean", "cls": "cls"}


def _st_modules():
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            "Exporting needs sentence-transformers: `pip install sentence-transformers` (or `pip install sentmtl[dev]`)."
        ) from err
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import (
            Dense,
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # 3.x - 5.x
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return SentenceTransformer, Transformer, Pooling, Dense, Normalize


def export_sentence_transformer(
    model, tokenizer, output_dir, max_seq_length: int | None = None, truncate_dim: int | None = None
) -> Path:
    """Write `model`'s embedding path to `output_dir` as a sentence-transformers model; returns the folder.

    `truncate_dim`: the export gives the first `truncate_dim` dimensions (re-normalised), as `encode(...,
    truncate_dim=)` does: the Dense layer keeps the projection's first rows, so the truncation is in the saved model
    itself (no setting a client must remember), and the Normalize module (a model with `normalize`) re-normalises.
    A model with LoRA adapters exports merged."""
    import torch

    if model.config.pooling not in _ST_POOLING:
        raise ValueError(
            f"pooling={model.config.pooling!r} has no sentence-transformers equivalent; "
            f"export supports {', '.join(_ST_POOLING)}."
        )
    SentenceTransformer, Transformer, Pooling, Dense, Normalize = _st_modules()
    model = merged(model)  # a LoRA model exports with its adapters folded into the encoder
    output_dir = Path(output_dir)
    max_seq_length = max_seq_length or default_max_length(tokenizer, model)
    projection = model.shared_projection
    rows = projection.out_features if truncate_dim is None else truncate_dim
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or not 1 <= rows <= projection.out_features:
        raise ValueError(
            f"truncate_dim={truncate_dim}: an integer in 1 … the embedding size ({projection.out_features})."
        )
    rows = int(rows)
    with tempfile.TemporaryDirectory() as encoder_dir:
        # The encoder alone, as a plain transformers checkpoint the Transformer module can load. sentmtl drops
        # BERT's pooler unless it pools with it; a freshly initialised one (unused by mean / CLS pooling) is saved
        # in its place, or every load of the export would report the pooler weights as missing.
        encoder = model.encoder
        dropped_pooler = hasattr(encoder, "pooler") and encoder.pooler is None
        if dropped_pooler:
            encoder.pooler = type(encoder)(encoder.config).pooler
        try:
            encoder.save_pretrained(encoder_dir)
        finally:
            if dropped_pooler:
                encoder.pooler = None
        tokenizer.save_pretrained(encoder_dir)
        transformer = Transformer(encoder_dir, max_seq_length=max_seq_length)
        modules = [
            transformer,
            Pooling(model.config.encoder_config.hidden_size, pooling_mode=_ST_POOLING[model.config.pooling]),
            Dense(
                projection.in_features,
                rows,
                bias=projection.bias is not None,
                activation_function=torch.nn.Identity(),
                init_weight=projection.weight[:rows].detach().cpu().clone().float(),
                init_bias=None if projection.bias is None else projection.bias[:rows].detach().cpu().clone().float(),
            ),
        ]
        if model.config.normalize:
            modules.append(Normalize())
        # The model's prompts, so that `encode(prompt_name=...)` and the default prompt work as in sentmtl. Pooling
        # keeps the prompt's tokens (include_prompt, its default), as sentmtl pools them.
        st_model = SentenceTransformer(
            modules=modules,
            device="cpu",
            prompts=dict(model.config.prompts or {}),
            default_prompt_name=model.config.default_prompt_name,
        )
        st_model.save(str(output_dir))
    return output_dir
