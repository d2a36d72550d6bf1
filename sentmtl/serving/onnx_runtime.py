"""Serve an exported sentmtl ONNX graph (`sentmtl.serving.onnx_export`): embeddings and every head's prediction, no torch.

    from sentmtl.serving.onnx_runtime import OnnxSentMtl
    model = OnnxSentMtl.from_pretrained("out")               # out/onnx/ (or the onnx folder itself); int8 by default
    vectors = model.encode(["The service was slow."])        # float32 [n, embedding_size], unit norm
    outputs = model.predict(["The service was slow."])       # {"embeddings": …, "classification": [n, 2], …}

Sentences are tokenised once, sorted by length and batched (each batch padded only to its longest member), then put
back in input order, as `sentmtl.encode` does. Needs `pip install "sentmtl[onnx]"`.
"""

import json
import logging
from pathlib import Path

import numpy as np

from ..utils.fingerprints import safetensors_fingerprint
from .onnx_export import FILES, FORMAT, MANIFEST, ONNX_FOLDER, require_onnx

logger = logging.getLogger(__name__)
VARIANTS = tuple(FILES)


def onnx_folder(path) -> Path:
    """The folder holding `sentmtl_onnx.json`: `path` itself, or its `onnx/` sub-folder (a run folder exported with
    `--export_onnx`)."""
    path = Path(path)
    for folder in (path, path / ONNX_FOLDER):
        if (folder / MANIFEST).is_file():
            return folder
    if not path.exists():  # e.g. a Hub id: the runtime reads local folders only
        raise FileNotFoundError(
            f"{path} is not a local folder. The ONNX runtime reads local folders: download a pushed "
            f"model first (hf download {path} --include 'onnx/*' --local-dir DIR), then pass DIR."
        )
    raise FileNotFoundError(
        f"{path} holds no exported ONNX model (no {MANIFEST} in it or in {path / ONNX_FOLDER}): "
        f"export one with: python run_embed.py --model_name_or_path {path} --export_onnx "
        f"{path / ONNX_FOLDER}"
    )


def check_weights(folder: Path, manifest: dict) -> None:
    """An export inside a model folder (`<model>/onnx/`) must have been made from the weights beside it: a save of new
    weights removes the old export, but a folder put together by hand (or a 0.2 export, which recorded no fingerprint)
    would serve the old model's outputs. A folder with no weights beside it has nothing to disagree with."""
    model_folder = folder.parent if folder.name == ONNX_FOLDER else None
    saved = safetensors_fingerprint(model_folder) if model_folder is not None else None
    if saved is None or manifest.get("weights_fingerprint") == saved:
        return
    reason = (
        "records no fingerprint of the weights it was made from (an export of sentmtl 0.2)"
        if manifest.get("weights_fingerprint") is None
        else f"was made from other weights than those in {model_folder}"
    )
    raise ValueError(
        f"{folder}: the ONNX export {reason}; serving it would give another model's outputs. Export it again: "
        f"python run_embed.py --model_name_or_path {model_folder} --export_onnx {folder}"
    )


class OnnxSentMtl:
    """An exported model and its tokenizer, run by onnxruntime on the CPU (or the providers given)."""

    def __init__(self, folder, variant: str = "int8", providers: list[str] | None = None, threads: int | None = None):
        require_onnx()
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = onnx_folder(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(
                f"{self.folder / MANIFEST}: format {self.manifest.get('format')!r}; this sentmtl reads "
                f"format {FORMAT}. Export it again with this version."
            )
        check_weights(self.folder, self.manifest)
        files = self.manifest["files"]
        if variant not in files:
            raise ValueError(
                f"variant={variant!r}: {self.folder} has {', '.join(files)} (of {', '.join(VARIANTS)}); "
                "export with quantisation for the int8 ones."
            )
        self.variant = variant
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.folder / files[variant]), options, providers=providers or ["CPUExecutionProvider"]
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self.outputs = list(self.manifest["outputs"])
        self.embedding_size = self.manifest["embedding_size"]

    @classmethod
    def from_pretrained(cls, path, variant: str = "int8", **kwargs) -> "OnnxSentMtl":
        return cls(path, variant, **kwargs)

    def tasks(self) -> dict[str, dict]:
        """The headed tasks the graph predicts: {name: {"type", "labels", "shape"}}."""
        return {name: spec for name, spec in self.manifest["outputs"].items() if name != "embeddings"}

    def encode(
        self,
        sentences,
        batch_size: int = 64,
        max_length: int | None = None,
        truncate_dim: int | None = None,
        show_progress_bar: bool | None = None,
        truncated: list[int] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> np.ndarray:
        """Embeddings, float32 `[n, embedding_size]` (or `[n, truncate_dim]`, re-normalised), in input order;
        `prompt_name` / `prompt` as `sentmtl.encode` takes them."""
        return self.predict(
            sentences,
            batch_size,
            max_length,
            truncate_dim,
            show_progress_bar,
            truncated,
            outputs=["embeddings"],
            prompt_name=prompt_name,
            prompt=prompt,
        )["embeddings"]

    def predict(
        self,
        sentences,
        batch_size: int = 64,
        max_length: int | None = None,
        truncate_dim: int | None = None,
        show_progress_bar: bool | None = None,
        truncated: list[int] | None = None,
        outputs: list[str] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Every output (or those named in `outputs`) for `sentences`, by name, in input order: `embeddings` and
        each headed task's prediction (`tasks()` says which, with their labels). `prompt_name` / `prompt`: the
        prefix of every output, as `sentmtl.encode` takes it. Neither: the embedding takes the model's default prompt
        (as `encode`), and each head its own task's (`tasks()[name]["prompt"]`), what it was trained on; the graph
        runs once per distinct prompt."""
        from ..model.prompts import check_prompt_room
        from .embed import _as_size

        if isinstance(sentences, str):
            sentences = [sentences]
        names = self.outputs if outputs is None else list(outputs)
        unknown = [name for name in names if name not in self.outputs]
        if unknown or not names:
            raise ValueError(
                f"outputs={outputs!r}: name some of this graph's outputs ({', '.join(self.outputs)}), or None for all."
            )
        groups = self._prompt_groups(names, prompt_name, prompt)
        limit = self.manifest["max_length"]
        if max_length is not None and not 1 <= max_length <= limit:
            raise ValueError(f"max_length={max_length!r}: 1 … {limit}, the encoder's token limit.")
        if truncate_dim is not None and not 1 <= (_as_size(truncate_dim) or 0) <= self.embedding_size:
            raise ValueError(
                f"truncate_dim={truncate_dim!r}: an integer in 1 … the embedding size ({self.embedding_size})."
            )
        max_length = max_length or self.manifest["max_length"]
        for prefix in groups:
            if prefix:
                check_prompt_room({"prompt": prefix}, self.tokenizer, max_length)
        shapes = {name: self.manifest["outputs"][name]["shape"][1:] for name in names}
        if truncate_dim is not None and "embeddings" in shapes:
            shapes["embeddings"] = [int(truncate_dim)]
        results = {name: np.empty((len(sentences), *shape), dtype=np.float32) for name, shape in shapes.items()}
        if not sentences:
            return results
        cut = []  # a sentence cut under any of the prompts, once
        for prefix, group in groups.items():
            prompted = [prefix + sentence for sentence in sentences]
            self._run(prompted, group, results, batch_size, max_length, truncate_dim, show_progress_bar, cut)
        cut = sorted(set(cut))
        if truncated is not None:
            truncated.extend(cut)
        elif cut:
            logger.warning(
                "%d of %d sentences are longer than %d tokens and were truncated.", len(cut), len(sentences), max_length
            )
        return results

    def _prompt_groups(self, names, prompt_name, prompt) -> dict[str, list[str]]:
        """{prefix: the outputs read with it}: every output with the one named, else the embedding with the default
        prompt and each head with its task's (a manifest without one: the default)."""
        from ..model.prompts import resolve_prompt

        prompts, default = self.manifest.get("prompts"), self.manifest.get("default_prompt_name")
        if prompt_name is not None or prompt is not None:
            return {resolve_prompt(prompts, default, prompt_name, prompt): list(names)}
        groups = {}
        for name in names:
            own = default if name == "embeddings" else self.manifest["outputs"][name].get("prompt", default)
            groups.setdefault(prompts[own] if own and prompts else "", []).append(name)
        return groups

    def _run(self, sentences, names, results, batch_size, max_length, truncate_dim, show_progress_bar, cut) -> None:
        """The graph's `names` outputs for `sentences` (prompted), written into `results` in input order."""
        from .embed import length_batches, tokenize_sentences

        tokenized = tokenize_sentences(self.tokenizer, sentences, max_length, cut)
        for index, input_ids, attention_mask in length_batches(
            self.tokenizer, tokenized, batch_size, show_progress_bar, "Embedding (ONNX)"
        ):
            values = self.session.run(names, {"input_ids": input_ids, "attention_mask": attention_mask})
            for name, value in zip(names, values):
                if name == "embeddings" and truncate_dim is not None:
                    value = value[:, :truncate_dim]
                    if self.manifest["normalize"]:
                        value = value / np.clip(np.linalg.norm(value, axis=1, keepdims=True), 1e-12, None)
                results[name][index] = value


__all__ = ["OnnxSentMtl", "VARIANTS", "onnx_folder"]
