"""sentmtl/data/batching.py: `prepare` (a user's table to the trainer, contrastive tables and ClassLabel columns
included), tokenising beside the cached teacher vectors, the collator's padding, and reading a batch across parts."""

import datasets
import pytest
import torch
from helpers import pair_rows

import sentmtl
import sentmtl.data.sources as task_data
from sentmtl.data.batching import MultiTaskCollator, prepare, tokenize_source
from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.data.teacher_cache import teacher_encoder
from sentmtl.model.task_spec import TaskSpec
from sentmtl.training.arguments import DataArguments, SentMtlTrainingArguments
from sentmtl.training.trainer import SentMtlTrainer

SEED_TASKS = [
    TaskSpec("classification", "classification", labels=["negative", "positive"]),
    TaskSpec("sentiment", "score"),
]


def test_prepare_tokenises_and_collate_pads_per_batch(tiny_tokenizer):
    table = datasets.Dataset.from_dict(
        {
            "sentence": ["the film was good .", "bad .", "the plot was very boring .", "fine ."],
            "label": ["positive", "negative", "Negative", "1"],
            "score": [0.9, 0.1, 0.2, 0.7],
        }
    )
    tokenized = prepare(table, SEED_TASKS, tiny_tokenizer, max_length=32)
    assert {"input_ids", "attention_mask", "target__classification", "target__sentiment", "domain"} <= set(
        tokenized.column_names
    )
    batch = MultiTaskCollator(tiny_tokenizer, SEED_TASKS)([tokenized[i] for i in range(4)])
    longest = max(len(tokenized[i]["input_ids"]) for i in range(4))
    assert batch["input_ids"].shape == (4, longest)
    assert batch["task_labels"]["classification"].tolist() == [1, 0, 0, 1]
    assert batch["task_labels"]["sentiment"].dtype.is_floating_point
    assert batch["complete_tasks"] == ("classification", "sentiment")


def test_the_collator_names_the_tasks_whose_target_every_row_carries(tiny_tokenizer):
    """`complete_tasks`, found on the host: a task with an absent target on any row (-100, NaN) is not named, so its
    loss keeps the mask; a task without targets in the batch neither."""
    ids = tiny_tokenizer(["good", "bad", "fine"])["input_ids"]
    rows = [
        {"input_ids": i, "target__classification": label, "target__sentiment": score}
        for i, label, score in zip(ids, [1, -100, 0], [0.9, 0.1, 0.5])
    ]
    collate = MultiTaskCollator(tiny_tokenizer, SEED_TASKS)
    assert collate(rows)["complete_tasks"] == ("sentiment",)
    rows[2]["target__sentiment"] = float("nan")
    assert collate(rows)["complete_tasks"] == ()
    assert collate([{"input_ids": i, "target__sentiment": 0.5} for i in ids])["complete_tasks"] == ("sentiment",)


def test_prepare_names_bad_values_and_missing_columns(tiny_tokenizer):
    table = datasets.Dataset.from_dict({"sentence": ["good", "odd"], "label": ["positive", "maybe"]})
    with pytest.raises(ValueError, match=r"the table, row 1, column 'label': label 'maybe' is not one of the names"):
        prepare(table, SEED_TASKS, tiny_tokenizer)
    with pytest.raises(ValueError, match="none of the tasks' target columns"):
        prepare(table.rename_column("label", "y"), SEED_TASKS, tiny_tokenizer)
    with pytest.raises(ValueError, match=r"label_columns names \['stars'\]"):
        prepare(table, SEED_TASKS, tiny_tokenizer, label_columns={"stars": "label"})


def test_a_class_label_column_is_read_by_its_names(tiny_tokenizer):
    """Found reviewing the #20 change: a `ClassLabel` column is read by its names, in the task's order."""
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])}
    )
    table = datasets.Dataset.from_dict(
        {"sentence": ["the place was best .", "the place was worst ."], "label": [0, 1]}, features=features
    )
    tone = TaskSpec("tone", "classification", labels=["neg", "pos"])
    assert prepare(table, [tone], tiny_tokenizer)["target__tone"] == [1, 0]  # pos, neg in the task's order
    renamed = TaskSpec("tone", "classification", labels=["good", "bad"])  # other names: a renaming, by id
    assert prepare(table, [renamed], tiny_tokenizer)["target__tone"] == [0, 1]


def test_a_class_label_column_whose_names_differ_by_case_is_read_by_its_names(tiny_tokenizer):
    """Issue 31, finding 1: names equal to the labels but for case were read by id, swapping the classes."""
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["POS", "NEG"])}
    )
    table = datasets.Dataset.from_dict(
        {"sentence": ["the place was best .", "the place was worst ."], "label": [0, 1]}, features=features
    )
    tone = TaskSpec("tone", "classification", labels=["neg", "pos"])
    assert prepare(table, [tone], tiny_tokenizer)["target__tone"] == [1, 0]  # POS is pos (id 1), NEG is neg (id 0)
    partly = TaskSpec("tone", "classification", labels=["neg", "good"])  # NEG is a label, POS is not: refused
    with pytest.raises(ValueError, match=r"ClassLabel names \['POS', 'NEG'\] are partly the task's labels"):
        prepare(table, [partly], tiny_tokenizer)


def test_two_tasks_never_share_a_default_column_silently(tiny_tokenizer):
    """Found reviewing the #20 change: two tasks never read the same default column without saying so."""
    table = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "score": [0.5]})
    with pytest.raises(ValueError, match=r"tasks \['sc', 'sim'\] would all read the column 'score' by default"):
        prepare(table, [TaskSpec("sc", "score"), TaskSpec("sim", "similarity")], tiny_tokenizer)


def test_prepare_builds_a_contrastive_table_for_the_trainer(tiny_encoder_dir, tmp_path):
    import datasets

    from sentmtl.data.batching import prepare

    tiny_model, tiny_tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[TaskSpec("retrieval", "contrastive").to_dict()]
    )
    rows = pair_rows(24, 0)
    table = datasets.Dataset.from_dict({key: [r[key] for r in rows] for key in ("anchor", "positive", "negative")})
    data = prepare(
        table,
        tiny_model.tasks,
        tiny_tokenizer,
        text_column="anchor",
        text_pair_column="positive",
        negative_columns=["negative"],
    )
    args = SentMtlTrainingArguments(
        output_dir=str(tmp_path / "t"),
        max_steps=2,
        per_device_train_batch_size=8,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        eval_strategy="no",
    )
    trainer = SentMtlTrainer(
        model=tiny_model, args=args, train_dataset=data, eval_dataset=data, processing_class=tiny_tokenizer
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_retrieval_queries"] == len({r["anchor"] for r in rows}) and "eval_retrieval_mrr@10" in metrics


def task_data_cache_dir():
    import sentmtl.data.teacher_cache

    return sentmtl.data.teacher_cache.default_cache_dir()


def test_tokenising_keeps_the_teacher_vectors_where_they_lie(
    tiny_encoder_dir, synthetic_csv, tiny_tokenizer, tiny_model
):
    """The vector columns are joined back beside the tokens (memory-mapped from the teacher cache), not copied
    through the tokenising map; the rows are those a plain map gives, split selection included."""

    tasks = [
        RunTask(
            TaskSpec("sentiment", "classification", labels=["negative", "positive"]),
            DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment"),
        ),
        RunTask(
            TaskSpec("distillation", "distillation"), DataSpec({"train_file": str(synthetic_csv)}, text_column="text")
        ),
    ]
    teacher = teacher_encoder(tiny_model, tiny_tokenizer, None, 32)
    source = task_data.build_sources(tasks, DataArguments(), 0, lambda name: teacher)[0]
    for split in (source.train, source.eval):
        joined = tokenize_source(split, tiny_tokenizer, 32)
        plain = split.map(
            lambda b: dict(tiny_tokenizer(b["text"], truncation=True, max_length=32)),
            batched=True,
            remove_columns=["text"],
        )
        assert joined.num_rows == plain.num_rows == split.num_rows
        for i in (0, split.num_rows - 1):
            assert joined[i] == plain[i]
        files = [f["filename"] for f in joined.cache_files]
        teacher_files = [f for f in files if f.startswith(str(task_data_cache_dir()))]
        assert teacher_files  # the vectors are read from the teacher cache's own file
        assert all(
            "target__distillation" not in datasets.Dataset.from_file(f).column_names
            for f in files
            if f not in teacher_files
        )  # and are in no other file


def test_a_selection_of_an_in_memory_table_keeps_its_own_targets(tiny_model, tiny_tokenizer, tmp_path):
    """Two tables with the same texts (so the same cached teacher vectors) and different targets: each selection's
    tokens carry its own table's targets (a key made of the teacher file alone would hand back the first's)."""
    from sentmtl.data.sources import add_teacher_targets, bounded

    teacher = teacher_encoder(tiny_model, tiny_tokenizer, None, 32)
    member = [RunTask(TaskSpec("d", "distillation"))]
    texts = [f"the film was good {i} ." for i in range(8)]
    out = []
    for value in (1, 9):
        table = datasets.Dataset.from_dict({"text": texts, "target__c": [value] * 8})
        table = add_teacher_targets(table, member, lambda name: teacher, tmp_path)
        out.append(tokenize_source(bounded(table, 5, "t"), tiny_tokenizer, 32))
    assert out[0]["target__c"] == [1] * 5 and out[1]["target__c"] == [9] * 5


def test_padding_to_a_multiple_keeps_pairs_negatives_and_the_length_limit(tiny_tokenizer):
    from sentmtl.data.batching import MultiTaskCollator

    def encoded(n):
        return {"input_ids": list(range(1, n + 1)), "attention_mask": [1] * n, "token_type_ids": [0] * n}

    rows = [
        {
            **encoded(n),
            **{f"pair_{k}": v for k, v in encoded(n + 1).items()},
            **{
                f"negative_{k}": [encoded(n + 2)[k], encoded(3)[k]]
                for k in ("input_ids", "attention_mask", "token_type_ids")
            },
        }
        for n in (5, 7)
    ]
    batch = MultiTaskCollator(tiny_tokenizer, [], pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 8) and batch["pair_input_ids"].shape == (2, 8)
    assert batch["negative_input_ids"].shape == (2, 2, 16)  # rows, k, 9 tokens padded to 16
    assert batch["attention_mask"].sum(1).tolist() == [5, 7] and batch["pair_attention_mask"].sum(1).tolist() == [6, 8]
    assert batch["negative_attention_mask"].sum(-1).tolist() == [[7, 3], [9, 3]]
    assert batch["token_type_ids"].shape == (2, 8)
    # Rounding up past the run's max_length (the encoder's position limit at most) would index past it: such a batch
    # is padded to max_length instead, one shape for the whole top band of lengths.
    capped = MultiTaskCollator(tiny_tokenizer, [], pad_to_multiple_of=8, max_length=7)
    assert capped([encoded(5), encoded(7)])["input_ids"].shape == (2, 7)
    assert capped([encoded(2), encoded(5)])["input_ids"].shape == (2, 7)
    assert capped([encoded(2), encoded(5)])["attention_mask"].sum(1).tolist() == [2, 5]
    assert MultiTaskCollator(tiny_tokenizer, [], pad_to_multiple_of=4, max_length=7)([encoded(2)])[
        "input_ids"
    ].shape == (1, 4)
    assert MultiTaskCollator(tiny_tokenizer, [])([encoded(5), encoded(7)])["input_ids"].shape == (2, 7)


def test_getitems_reads_a_batch_as_getitem_does_across_parts():
    """`MultiSourceDataset.__getitems__` (one read per part and batch) returns what row-by-row reading returns, in the
    order asked, across parts."""
    from sentmtl.data.batching import MultiSourceDataset

    first = datasets.Dataset.from_dict({"input_ids": [[1, 2], [3], [4, 5, 6]], "target__a": [0.5, 1.0, 0.0]})
    second = datasets.Dataset.from_dict({"input_ids": [[7], [8, 9]], "target__b": [[0.25, 0.5], [0.75, 1.0]]})
    dataset = MultiSourceDataset([first, second])
    indices = [4, 0, 2, 3, 1]
    assert dataset.__getitems__(indices) == [dataset[i] for i in indices]
    # The DataLoader uses it: a batch sampler's batch arrives as those rows.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[indices], collate_fn=lambda rows: rows)
    assert next(iter(loader)) == [dataset[i] for i in indices]


def test_prepare_reads_a_prompted_models_texts_with_their_prompts(tiny_encoder_dir):
    """Review finding: prepare() read the table unprompted for a model trained with prompts."""
    import datasets
    import pytest

    import sentmtl
    from sentmtl.data.batching import prepare

    task = {"name": "classification", "type": "classification", "labels": ["negative", "positive"], "prompt": "query"}
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[task], prompts={"query": "i really "}
    )
    table = datasets.Dataset.from_dict({"sentence": ["the movie was good ."], "label": ["positive"]})
    with pytest.raises(ValueError, match="pass config=model.config"):
        prepare(table, model.tasks, tokenizer)
    data = prepare(table, model.tasks, tokenizer, config=model.config)
    assert tokenizer.decode(data[0]["input_ids"]) == "[CLS] i really the movie was good. [SEP]"
    same = prepare(table, model.tasks, tokenizer, prompt_for=model.config.prompt_for)
    assert same["input_ids"] == data["input_ids"]


def test_prepare_applies_a_default_only_prompt_and_checks_the_room_it_leaves(tiny_encoder_dir):
    """Review item 5: a prompt given only through default_prompt_name took a prompt_for= the user had no reason to
    pass (no task names a prompt), and a prompt that leaves no room for text under max_length was not refused."""
    import datasets
    import pytest

    import sentmtl
    from sentmtl.data.batching import prepare

    task = {"name": "classification", "type": "classification", "labels": ["negative", "positive"]}
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir),
        embedding_size=16,
        tasks=[task],
        prompts={"query": "i really "},
        default_prompt_name="query",
    )
    table = datasets.Dataset.from_dict({"sentence": ["the movie was good ."], "label": ["positive"]})
    data = prepare(table, model.tasks, tokenizer, config=model.config)
    assert tokenizer.decode(data[0]["input_ids"]) == "[CLS] i really the movie was good. [SEP]"
    for given in ({"config": model.config}, {"prompt_for": model.config.prompt_for}):
        with pytest.raises(ValueError, match=r"\('i really '\) takes 4 of the 4 tokens"):
            prepare(table, model.tasks, tokenizer, max_length=4, **given)
    with pytest.raises(ValueError, match="not both"):
        prepare(table, model.tasks, tokenizer, config=model.config, prompt_for=model.config.prompt_for)
