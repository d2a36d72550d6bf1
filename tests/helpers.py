"""Plain helpers shared by several test files (fixtures are in conftest.py): the synthetic data, run flags for
seconds-long runs, small file writers, models with given tasks, and the ONNX reference outputs.

Imported by the 2-process gloo ranks too (tests/e2e/test_distributed_gloo.py): keep the module's own imports to the
standard library, numpy and torch; anything heavier is imported inside the function that needs it."""

import csv
import importlib.util
import random
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# The words of the tiny vocabulary (conftest.TINY_VOCAB) the synthetic sentences are made of.
POSITIVE_WORDS = ["good", "great", "love", "excellent", "wonderful", "happy", "best", "fine"]
NEGATIVE_WORDS = ["bad", "awful", "hate", "terrible", "worst", "boring", "poor", "broken"]
TOPICS = ["movie", "film", "plot", "food", "service", "phone", "place", "battery", "acting", "story"]


def load_model_file(name):
    """sentmtl/model/<name>.py loaded as a file, without the sentmtl package: distributed.py must import torch and the
    standard library only (it is copied beside saved weights), and a spawned rank skips importing transformers."""
    spec = importlib.util.spec_from_file_location(f"_standalone_{name}", REPO_ROOT / "sentmtl" / "model" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- data -------------------------------------------------------------------------------------------------------------


def synthetic_rows(n: int, seed: int = 0) -> dict:
    """Sentences whose sentiment is carried by one word of the tiny vocabulary: learnable in a few steps."""
    rng = random.Random(seed)
    rows = {"sentence": [], "label": []}
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS)
        rows["sentence"].append(f"the {rng.choice(TOPICS)} was {rng.choice(['', 'very ', 'really '])}{word} .")
        rows["label"].append(label)
    return rows


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_dict_csv(path, rows):
    """Rows as dicts; the first row's keys are the header."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def pair_rows(n, seed):
    """Retrieval pairs (anchor, positive, a hard negative, a score) in the tiny vocabulary."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, word = TOPICS[i % len(TOPICS)], rng.choice(POSITIVE_WORDS + NEGATIVE_WORDS)
        rows.append(
            {
                "anchor": f"the {topic} was {word} .",
                "positive": f"it is a {word} {topic} !",
                "negative": f"the {rng.choice(TOPICS)} was not {word} .",
                "score": round(rng.random(), 2),
            }
        )
    return rows


def tokenized_synthetic(tokenizer, n=32, tasks=None):
    """The seed's two tasks' targets on synthetic sentences, through the documented Python path (`prepare`)."""
    import datasets

    from sentmtl.data.batching import prepare
    from sentmtl.model.task_spec import TaskSpec

    rows = synthetic_rows(n)
    dataset = datasets.Dataset.from_dict({**rows, "score": [float(label) for label in rows["label"]]})
    tasks = tasks or [
        TaskSpec("classification", "classification", labels=["negative", "positive"]),
        TaskSpec("sentiment", "score"),
    ]
    return prepare(dataset, tasks, tokenizer, max_length=32)


def texts_table(n, offset=0):
    import datasets

    return datasets.Dataset.from_dict({"text": [f"sentence number {i + offset} ." for i in range(n)]})


def distinct_ids(n, k=0):
    """Contrastive targets of n rows whose texts are all distinct: [flag 1, anchor, positive, k negatives …]."""
    return torch.tensor([[1, *range(i * (2 + k), (i + 1) * (2 + k))] for i in range(n)])


def counting_teacher(key="k", width=4, delay=0.0):
    """A teacher whose vectors are a function of the text, counting the sentences it embeds (`.calls`)."""
    import time

    from sentmtl.data.teacher_cache import Teacher

    class CountingTeacher(Teacher):
        def __init__(self, key, width, delay):
            self.calls = []

            def encode(sentences):
                self.calls.append(len(sentences))
                time.sleep(delay)
                return np.array(
                    [[len(s), s.count(" "), i % 3, 1.0] for i, s in enumerate(sentences)], dtype=np.float32
                )[:, :width]

            super().__init__("counting", key, width, encode)

    return CountingTeacher(key, width, delay)


def counting_miner(key="weights", own_model=False, delay=0.0):
    """A hard-negative miner whose vectors are a function of the text (8 seeded normals), recording the sentences it
    embeds (`.calls`)."""
    import time
    import zlib

    from sentmtl.data.miners import Miner

    calls = []

    def encode(sentences):
        calls.append(list(sentences))
        time.sleep(delay)
        vectors = [np.random.default_rng(zlib.crc32(s.encode())).standard_normal(8) for s in sentences]
        return np.stack(vectors).astype(np.float32)

    miner = Miner("counting", key, encode, own_model)
    miner.calls = calls
    return miner


# -- models -----------------------------------------------------------------------------------------------------------

# One task of every type with a loss of its own.
ALL_TYPES = [
    {"name": "sentiment3", "type": "classification", "labels": ["neg", "mid", "pos"]},
    {"name": "tags", "type": "multilabel", "labels": ["food", "service", "price"]},
    {"name": "rating", "type": "score", "loss": "mse"},
    {"name": "stars", "type": "regression"},
    {"name": "paraphrase", "type": "similarity"},
    {"name": "keep", "type": "distillation"},
]


def padded_batch(tokenizer, sentences):
    """The sentences tokenised and padded into one batch of tensors (a plain dict)."""
    return {k: v for k, v in tokenizer(sentences, padding=True, return_tensors="pt").items()}


def encoder_dir(tmp_path, kind, tokenizer_dir):
    """A tiny random encoder of `kind` (bert, mpnet, roberta, distilbert, xlm) saved in tmp_path/kind with the tiny BERT
    tokenizer of `tokenizer_dir` (the vocabulary is all the tests need)."""
    import shutil

    from transformers import (
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertModel,
        MPNetConfig,
        MPNetModel,
        RobertaConfig,
        RobertaModel,
        XLMConfig,
        XLMModel,
    )

    path = tmp_path / kind
    if kind == "distilbert":
        encoder = DistilBertModel(
            DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64)
        )
    elif kind == "xlm":  # no activation checkpointing in transformers, nor in sentmtl
        encoder = XLMModel(XLMConfig(vocab_size=64, emb_dim=32, n_layers=2, n_heads=2, max_position_embeddings=64))
    else:
        model_class, config_class = {
            "bert": (BertModel, BertConfig),
            "mpnet": (MPNetModel, MPNetConfig),
            "roberta": (RobertaModel, RobertaConfig),
        }[kind]
        small = dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=64
        )
        encoder = model_class(config_class(vocab_size=64, pad_token_id=1, **small))
    encoder.save_pretrained(path)
    for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, path / name)
    return path


def model_with(tiny_encoder_dir, tasks, **config):
    """The tiny encoder with these tasks (TaskSpec objects), seeded."""
    import sentmtl

    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[t.to_dict() for t in tasks], **config
    )
    return model, tokenizer


def training_args(tmp_path, **overrides):
    from sentmtl.training.arguments import SentMtlTrainingArguments

    values = dict(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        per_device_train_batch_size=8,
        logging_steps=1,
        eval_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    values.update(overrides)
    return SentMtlTrainingArguments(**values)


# -- run flags and run files ------------------------------------------------------------------------------------------


def tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *extra) -> list[str]:
    """run_mtl.py flags for a seconds-long run: the tiny encoder on the synthetic CSV, 2 epochs."""
    return [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--train_file",
        str(synthetic_csv),
        "--text_column",
        "text",
        "--label_column",
        "sentiment",
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        *extra,
    ]


def exact_flags(tiny_encoder_dir, synthetic_csv, out, *extra):
    """Deterministic batches and no dropout, so two runs that see the same data compute the same gradients. Without
    distillation: its loss compares the sentences of a batch with each other, so 2 batches of 8 are not 1 of 16."""
    return tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        out,
        "--dropout",
        "0",
        "--bf16",
        "false",
        "--distillation_weight",
        "0",
        "--train_sampling_strategy",
        "sequential",
        "--warmup_steps",
        "0",
        *extra,
    )


def run_results(out, name="train_results.json") -> dict:
    import json

    return json.loads((out / name).read_text())


def retrieval_run_file(tmp_path, files, **retrieval):
    """A run file with a contrastive task on `files` (the retrieval_files fixture; `retrieval`: its extra fields) and
    a classification task beside it, with Matryoshka sizes 16 and 8."""
    import yaml

    task = {
        "name": "retrieval",
        "type": "contrastive",
        "text_column": "anchor",
        "text_pair_column": "positive",
        "data": {"train_file": str(files["train"]), "validation_file": str(files["dev"])},
        **retrieval,
    }
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "matryoshka_dims": [16, 8],
                "tasks": [
                    task,
                    {
                        "name": "classification",
                        "type": "classification",
                        "labels": ["negative", "positive"],
                        "data": {"train_file": str(files["labelled"])},
                    },
                ],
            }
        )
    )
    return run_file


def retrieval_flags(tiny_encoder_dir, out, *extra):
    """The flags beside a retrieval run file: the tiny encoder, 2 epochs."""
    return [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        *extra,
    ]


def stream_run_file(tmp_path, train, dev, **data):
    """A run file whose classification and distillation tasks read `train` as a stream (`data`: more data keys)."""
    import yaml

    source = {"train_file": str(train), "validation_file": str(dev), "streaming": True, **data}
    path = tmp_path / "stream.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "data": source},
                    {"name": "distillation", "type": "distillation", "data": source},
                ]
            }
        )
    )
    return path


def stream_flags(tiny_encoder_dir, run_file, out, *extra):
    """The flags of a streamed run: 10 steps, a 32-row shuffle buffer."""
    return [
        str(run_file),
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--max_steps",
        "10",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--stream_buffer_size",
        "32",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        *extra,
    ]


# -- sharing and ONNX -------------------------------------------------------------------------------------------------

SHARING_SENTENCES = [
    "the movie was great .",
    "the food was very awful .",
    "the phone was fine .",
    "the plot was boring .",
]

# Lengths that differ a lot, so a batch pads and sorts.
ONNX_SENTENCES = [
    "the food was great .",
    "bad",
    "the movie was really not very good and the plot was boring .",
    "i love it",
    "the service was awful , the place was worst .",
    "fine",
]


def torch_outputs(model, tokenizer, sentences):
    """The reference: each sentence alone through the torch model (no padding at all), in fp32."""
    rows = []
    model.eval()
    with torch.no_grad():
        for sentence in sentences:
            batch = tokenizer([sentence], return_tensors="pt")
            out = model(batch["input_ids"], batch["attention_mask"])
            row = {"embeddings": out.embeddings[0].numpy()}
            for task in model.tasks:
                if task.has_head:
                    row[task.name] = task.kind.predict(task, out.task_outputs[task.name])[0].numpy()
            rows.append(row)
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def cosine(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def model_folder_with_export(exported, folder):
    """`folder`: the exported model saved, and its graph in `folder/onnx`, as run_mtl.py --export_onnx leaves it."""
    import shutil

    model, tokenizer, out = exported
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copytree(out, folder / "onnx")
    return model, folder


def skip_without_onnx():
    """Skip (the module, where called at its top) when the onnx extra is not installed; CI installs it (".[dev]"),
    so there it must be present."""
    import os

    import pytest

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the onnx extra is not installed (pip install 'sentmtl[onnx]')", allow_module_level=True)


# -- compiled runs ----------------------------------------------------------------------------------------------------


def varied_table(model, tokenizer, n=48, seed=0):
    """Labelled sentences of 6 to 30 tokens (the model's classification and score targets), so that length-grouped
    batches have many lengths."""
    import datasets

    from sentmtl.data.batching import prepare

    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    sentences = [
        f"the {rng.choice(TOPICS)} was {'very ' * rng.randrange(25)}"
        f"{rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS)} ."
        for label in labels
    ]
    table = datasets.Dataset.from_dict({"sentence": sentences, "label": labels, "score": [float(x) for x in labels]})
    return prepare(table, model.tasks, tokenizer, max_length=64)


def without_dropout(model):
    """Dropout off everywhere (the encoder's too): compiled dropout draws other random numbers than eager dropout."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def traced_run(model, tokenizer, out, backend=None, callbacks=(), resume=None, rows=48, dataset=None, **overrides):
    """A `SentMtlTrainer` run on `dataset` (default: `varied_table`) (12 steps of 8 at LR 1e-3 unless overridden), compiled with `backend`
    (None: eager): (per-step losses, each batch's input_ids in order, the graphs compiled, the trainer)."""
    from torch._dynamo.utils import counters
    from transformers import TrainerCallback

    from sentmtl.data.batching import MultiTaskCollator
    from sentmtl.training.trainer import SentMtlTrainer

    class Losses(TrainerCallback):
        values = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if "loss" in logs:
                self.values.append(logs["loss"])

    torch._dynamo.reset()  # a graph compiled by an earlier run in this process is not reused
    counters.clear()
    collator, batches = MultiTaskCollator(tokenizer, model.tasks), []

    def collate(rows):
        batch = collator(rows)
        batches.append(batch["input_ids"].tolist())
        return batch

    values = dict(max_steps=12, learning_rate=1e-3, warmup_steps=0, report_to=[], save_strategy="no")
    if backend is not None:
        values.update(torch_compile=True, torch_compile_backend=backend)
    args = training_args(out, **{**values, **overrides})
    losses = Losses()
    losses.values = []
    trainer = SentMtlTrainer(
        model=model,
        args=args,
        train_dataset=dataset if dataset is not None else varied_table(model, tokenizer, rows),
        processing_class=tokenizer,
        data_collator=collate,
        callbacks=[losses, *(make(args) for make in callbacks)],
    )
    trainer.train(resume_from_checkpoint=resume)
    return np.array(losses.values), batches, counters["stats"]["unique_graphs"], trainer


def st_model_dir(tmp_path, encoder_dir, pooling_config, name="st-model"):
    """`encoder_dir` as a sentence-transformers model folder whose 1_Pooling/config.json is `pooling_config`."""
    import json
    import shutil

    folder = tmp_path / name
    shutil.copytree(encoder_dir, folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return folder
