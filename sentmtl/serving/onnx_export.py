"""Export a sentmtl model to one ONNX graph: encoder, pooling, projection, normalisation and every head.

    from sentmtl.serving.onnx_export import export_onnx
    export_onnx(model, tokenizer, "out/onnx")          # out/onnx/model.onnx, model_int8.onnx, tokenizer, manifest
    python run_embed.py --model_name_or_path out --export_onnx out/onnx

The graph takes `input_ids` and `attention_mask` (`[batch, sequence]`, int64, both axes dynamic) and returns
`embeddings` (`[batch, embedding_size]`, as `sentmtl.encode` in fp32) and, for each task with a head, the task's
prediction under the task's name (class probabilities, label probabilities, a score in [0, 1] or a value: what
`TaskType.predict` gives). `sentmtl_onnx.json` beside it names the outputs, labels and sizes, so
`sentmtl.serving.onnx_runtime.OnnxSentMtl` (or any ONNX runtime) can serve it without the package's torch code.

Two int8 variants, both quantising only the encoder's weight MatMuls (the attention's activation products, the
projection and the heads stay fp32: the first cost far more cosine than they save time, the others are cheap and the
heads' probabilities are what a user reads):

- `int8` (the default): 8-bit weights in blocks of 128 along the input, each with its own scale (onnxruntime's
  MatMulNBits, int8 compute with the activations quantised per block too: `accuracy_level=4`).
- `int8_dynamic`: onnxruntime's dynamic quantisation (weights int8 per output channel, activations per tensor for
  each batch): the method of sentence-transformers' avx512_vnni export. Faster, and less faithful.

Measured on the bundled MiniLM by `benchmarks/speed.py` (this 2-core AVX-512 machine, the corpus's 3,000
sentences, median of 7 interleaved passes): fp32 graph 345 sentences/s; `int8` 423/s at a minimum cosine of 0.993 to
fp32; `int8_dynamic` 665/s at 0.962 (`sentmtl.encode` in bf16: 534/s at 0.9999). On a model trained on a corpus
slice, over the 596 held-out sentences: `int8` agrees with torch on Task A for 99.5% (minimum cosine 0.995),
`int8_dynamic` for 98.8% (0.971). `benchmarks/speed.py` measures them beside sentence-transformers' own backends.

Needs the optional extra: `pip install "sentmtl[onnx]"` (onnx, onnxscript, onnxruntime).
"""

import copy
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.lora import adapter_state_dict, has_lora, merged
from ..model.model_folder import MANIFEST, ONNX_FOLDER  # noqa: F401 (ONNX_FOLDER: a run folder's export, pushed with it)
from ..model.task_types import TaskInputs
from ..utils.fingerprints import weights_fingerprint

logger = logging.getLogger(__name__)

FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "int8_dynamic": "model_int8_dynamic.onnx"}
OPSET = 18
FORMAT = 1  # of sentmtl_onnx.json
INT8_BLOCK = 128  # `int8`: one scale per 128 weights along the input (0.992 minimum cosine here; 32: 0.998, slower)
INPUTS = ("input_ids", "attention_mask")
# The export checks itself on these before writing anything else: the graph must give what the torch model gives.
CHECK_SENTENCES = [
    "A short one.",
    "The service was slow, but the food made up for it and we will come back soon.",
    "ok",
    "Not what I ordered.",
]


def require_onnx():
    """The optional packages (and a torch whose exporter this uses), or an ImportError that says how to get them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f'the ONNX path needs the optional extra ({err.name} is missing): pip install "sentmtl[onnx]"'
        ) from None
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        raise ImportError(
            f"the ONNX export needs torch >= 2.6 (its dynamo exporter); this is {torch.__version__}: "
            'pip install "sentmtl[onnx]"'
        )


class OnnxGraph(nn.Module):
    """What the exported graph computes: the embedding, then each headed task's prediction from it (the forward
    pass's heads, in evaluation mode: dropout off)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.tasks = [task for task in model.tasks if task.has_head]

    def forward(self, input_ids, attention_mask):
        embeddings = self.model.embed(input_ids, attention_mask)
        outputs = [embeddings]
        for task in self.tasks:
            head = getattr(self.model, f"{task.name}_head")(embeddings)
            output = task.kind.output(task, TaskInputs(embeddings, head_output=head))
            outputs.append(task.kind.predict(task, output).float())
        return tuple(outputs)


def output_names(model) -> list[str]:
    names = ["embeddings", *(task.name for task in model.tasks if task.has_head)]
    clash = sorted(set(names[1:]) & {"embeddings", *INPUTS})
    if clash:
        raise ValueError(
            f"tasks named {clash} would clash with the ONNX graph's inputs and outputs ({', '.join(INPUTS)}, "
            "embeddings): rename them."
        )
    return names


def manifest(model, max_length: int, variants: list[str], shapes: dict[str, tuple]) -> dict:
    """What a runtime needs besides the graph: outputs (shapes, types, labels), sizes, the tokenizer's limit."""
    config = model.config
    tasks = {task.name: task for task in model.tasks}
    outputs = {}
    for name, shape in shapes.items():
        outputs[name] = {"shape": ["batch", *shape[1:]]}
        if name in tasks:
            outputs[name].update(type=tasks[name].type, labels=list(tasks[name].labels or []))
            # The prompt the head's texts were trained with (None: none), for `predict(prompt_name=...)`.
            outputs[name]["prompt"] = tasks[name].prompt_names.get("text", config.default_prompt_name)
    return {
        "format": FORMAT,
        "embedding_size": config.embedding_size,
        "normalize": config.normalize,
        "max_length": max_length,
        "matryoshka_dims": config.matryoshka_dims,
        # The runtime prepends them to the text, as `encode` does (the graph takes token ids).
        "prompts": config.prompts,
        "default_prompt_name": config.default_prompt_name,
        "inputs": list(INPUTS),
        "files": {variant: FILES[variant] for variant in variants},
        "outputs": outputs,
        # The weights the graph was made from: the runtime refuses the graph beside any other weights.
        # What the folder's model.safetensors holds: an adapter folder's is every weight but the frozen encoder's.
        "weights_fingerprint": weights_fingerprint(adapter_state_dict(model) if has_lora(model) else model),
    }


def export_onnx(model, tokenizer, output_dir, quantize: bool = True) -> Path:
    """Write `model.onnx` (fp32), the two int8 variants (when `quantize`), the tokenizer and `sentmtl_onnx.json` to
    `output_dir`; returns it. The model is copied to the CPU in fp32 and left as it was. Everything is written to a
    sibling folder first and checked there (the fp32 graph against the torch model: embeddings cosine >= 0.9999, head
    outputs within 1e-4, relative for large values); only then does it replace `output_dir`, so a failed export
    leaves no half-new folder. The graph takes up to the encoder's token limit (`max_length` in the manifest)."""
    require_onnx()
    from .embed import default_max_length, pad_ids, tokenize_sentences

    output_dir = Path(output_dir)
    names = output_names(model)
    single_sentence_types(tokenizer)
    max_length = default_max_length(tokenizer, model)
    graph = OnnxGraph(copy.deepcopy(merged(model)).float().cpu()).eval()  # LoRA adapters folded in
    # Two rows of different lengths: the traced shapes are symbolic in both axes (a size of 1 would be specialised).
    ids, mask = pad_ids(tokenize_sentences(tokenizer, CHECK_SENTENCES[:2], max_length), tokenizer)
    example = (torch.from_numpy(ids), torch.from_numpy(mask))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        fp32_path = staging / FILES["fp32"]
        with torch.no_grad():
            program = torch.onnx.export(
                graph,
                example,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(INPUTS),
                output_names=names,
                dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}),
                verbose=False,
            )
        program.save(str(fp32_path))
        shapes = check_parity(graph, fp32_path, tokenizer, max_length, names)
        variants = ["fp32", *(quantize_int8(fp32_path, staging) if quantize else [])]
        tokenizer.save_pretrained(str(staging))
        (staging / MANIFEST).write_text(json.dumps(manifest(model, max_length, variants, shapes), indent=2) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output_dir


def single_sentence_types(tokenizer) -> None:
    """The graph takes input_ids and attention_mask: token types are the encoder's default, 0. A tokenizer that gives
    a single sentence other types (Funnel's CLS is type 2) would be served wrongly: refused."""
    types = tokenizer("A sentence.").get("token_type_ids")
    if types is not None and any(types):
        raise ValueError(
            f"this tokenizer ({type(tokenizer).__name__}) gives a single sentence token types {types}, not "
            "all 0; the ONNX graph takes input_ids and attention_mask only, so it cannot be exported."
        )


def check_parity(graph: OnnxGraph, path: Path, tokenizer, max_length: int, names: list[str]) -> dict[str, tuple]:
    """The exported graph against the torch module it came from, on sentences of several lengths (batched, so
    padding is exercised). A mismatch is an export bug: raise rather than ship it. Returns each output's shape."""
    import onnxruntime as ort

    from .embed import pad_ids, tokenize_sentences

    ids, mask = pad_ids(tokenize_sentences(tokenizer, CHECK_SENTENCES, max_length), tokenizer)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(names, {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        want = [t.numpy() for t in graph(torch.from_numpy(ids), torch.from_numpy(mask))]
    cosine = (got[0] * want[0]).sum(-1) / np.linalg.norm(got[0], axis=-1) / np.linalg.norm(want[0], axis=-1)
    # Within 1e-4, or 1e-4 relative for large values (a regression head's fp32 rounding grows with its scale).
    worst = {
        name: float((np.abs(g - w) / np.maximum(1.0, np.abs(w))).max())
        for name, g, w in zip(names[1:], got[1:], want[1:])
    }
    if cosine.min() < 0.9999 or any(v > 1e-4 for v in worst.values()):
        raise RuntimeError(
            f"the exported ONNX graph {path} disagrees with the torch model: embeddings cosine "
            f"{cosine.min():.6f} (needs >= 0.9999), head differences {worst} (need <= 1e-4)."
        )
    return {name: value.shape for name, value in zip(names, got)}


def quantize_int8(source: Path, output_dir: Path) -> list[str]:
    """Both int8 variants of the fp32 graph `source` (see the module docstring), written beside it; their names."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(source))
    weights = {init.name for init in model.graph.initializer}
    chosen = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and any(name in weights for name in node.input)
    ]
    blocks = {"bits": 8, "block_size": INT8_BLOCK, "is_symmetric": True, "accuracy_level": 4}
    quantizer = MatMulNBitsQuantizer(
        model,
        nodes_to_include=chosen,
        algo_config=DefaultWeightOnlyQuantConfig(op_types_to_quantize=("MatMul",), **blocks),
        **blocks,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(output_dir / FILES["int8"]), use_external_data_format=False)
    quantize_dynamic(
        str(source),
        str(output_dir / FILES["int8_dynamic"]),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=chosen,
    )
    logger.info("int8: %d weight MatMuls quantised in %s", len(chosen), output_dir)
    return ["int8", "int8_dynamic"]


__all__ = [
    "FILES",
    "FORMAT",
    "MANIFEST",
    "ONNX_FOLDER",
    "OnnxGraph",
    "check_parity",
    "export_onnx",
    "output_names",
    "quantize_int8",
    "require_onnx",
    "single_sentence_types",
]
