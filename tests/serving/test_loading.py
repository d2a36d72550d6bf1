"""sentmtl/serving/loading.py (`build_model`): a continued model takes the run's own Matryoshka settings, checked
against the checkpoint's sizes. Continuing a trained checkpoint through a run: tests/e2e/test_run_mtl.py."""

import json
import shutil

import pytest

import sentmtl
from sentmtl.model.task_spec import TaskSpec


def test_a_continued_matryoshka_model_refuses_an_added_cosine_distillation(tiny_model, tiny_tokenizer, tmp_path):
    from sentmtl.serving.loading import build_model
    from sentmtl.training.arguments import ModelArguments

    tiny_model.config.matryoshka_dims = [16, 8]
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    tasks = [*tiny_model.tasks, TaskSpec("d", "distillation", loss="cosine")]
    with pytest.raises(ValueError, match="d \\(loss cosine\\) cannot be taken on a truncated embedding"):
        build_model(ModelArguments(model_name_or_path=str(tmp_path / "m")), tasks)


def test_a_continued_run_sets_its_own_self_distillation_weight(tiny_model, tiny_tokenizer, tmp_path):
    from sentmtl.serving.loading import build_model
    from sentmtl.training.arguments import ModelArguments
    from sentmtl.training.model_card import build_model_card

    tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_self_distillation = [16, 8], 10.0
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    card = build_model_card(tiny_model.config, {}, {})
    assert "+ 10 × Matryoshka self-distillation" in card and "self-distillation, weight 10" in card
    # A training setting, like the tasks' loss weights: the run's value, not the checkpoint's (0 when unset).
    unset, _ = build_model(ModelArguments(model_name_or_path=str(tmp_path / "m")), tiny_model.tasks)
    assert unset.config.matryoshka_self_distillation == 0.0
    five, _ = build_model(
        ModelArguments(model_name_or_path=str(tmp_path / "m"), matryoshka_self_distillation=5.0), tiny_model.tasks
    )
    assert five.config.matryoshka_self_distillation == 5.0
    # Checked against the checkpoint's sizes: none there, so the weight has nothing to act on.
    tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_self_distillation = None, 0.0
    tiny_model.save_pretrained(tmp_path / "plain")
    tiny_tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="matryoshka_self_distillation without matryoshka_dims"):
        build_model(
            ModelArguments(model_name_or_path=str(tmp_path / "plain"), matryoshka_self_distillation=5.0),
            tiny_model.tasks,
        )


def test_a_continued_prompted_model_keeps_its_prompts_and_refuses_others(tiny_encoder_dir, tmp_path):
    from sentmtl.serving.loading import build_model, load_model_and_tokenizer
    from sentmtl.training.arguments import ModelArguments

    prompts = {"query": "i really ", "document": "this is a "}
    model, tokenizer = load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, prompts=prompts)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    classify = TaskSpec("classification", "classification", labels=["negative", "positive"], prompt="query")
    continued, _ = build_model(ModelArguments(model_name_or_path=str(tmp_path / "m")), [classify])
    assert continued.config.prompts == prompts
    assert continued.config.prompt_token_ids == {
        "i really ": tokenizer("i really ", add_special_tokens=False)["input_ids"]
    }
    with pytest.raises(
        ValueError, match=r"--prompts \{'query': 'q: '\}: .* was trained with prompts=\{.*'query': 'i really '\}"
    ):
        build_model(ModelArguments(model_name_or_path=str(tmp_path / "m"), prompts=["query=q: "]), [classify])
    with pytest.raises(ValueError, match=r"names the prompt\(s\) \['passage'\]"):
        build_model(
            ModelArguments(model_name_or_path=str(tmp_path / "m")), [TaskSpec("s", "similarity", prompt="passage")]
        )


def test_a_continued_task_that_names_no_prompt_keeps_its_saved_one(tiny_encoder_dir, tmp_path):
    """Review item 2: a run file that re-declares a saved task without `prompt:` kept its texts on the saved prompt,
    not the default (the checkpoint learned them with it); a prompt the run names wins; a saved prompt the run's task
    cannot take is refused in one line naming both."""
    from sentmtl.serving.loading import build_model, load_model_and_tokenizer
    from sentmtl.training.arguments import ModelArguments

    prompts = {"query": "i really ", "document": "this is a "}
    classify = TaskSpec("classification", "classification", labels=["negative", "positive"], prompt="query")
    retrieve = TaskSpec("retrieval", "contrastive", prompt={"text_pair": "query"})
    model, tokenizer = load_model_and_tokenizer(
        str(tiny_encoder_dir),
        embedding_size=16,
        prompts=prompts,
        default_prompt_name="document",
        tasks=[classify.to_dict(), retrieve.to_dict()],
    )
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    args = ModelArguments(model_name_or_path=str(tmp_path / "m"))
    bare = [
        TaskSpec("classification", "classification", labels=["negative", "positive"]),
        TaskSpec("retrieval", "contrastive"),
    ]
    continued, _ = build_model(args, bare + [TaskSpec("sts", "similarity")])
    config = continued.config
    assert config.task("classification").prompt == "query" and config.task("retrieval").prompt == {"text_pair": "query"}
    assert config.prompt_for(config.task("retrieval"), "text") == "this is a "  # the roles it does not name: default
    assert config.task("sts").prompt is None  # a new task: the default prompt, as in a fresh run
    assert config.prompt_token_ids == {"i really ": tokenizer("i really ", add_special_tokens=False)["input_ids"]}
    named, _ = build_model(
        args, [TaskSpec("classification", "classification", labels=["negative", "positive"], prompt="document")]
    )
    assert named.config.task("classification").prompt == "document"
    with pytest.raises(
        ValueError,
        match=r"task 'retrieval' is saved in .* with prompt \{'text_pair': 'query'\}, which a "
        r"distillation task cannot take",
    ):
        build_model(args, [bare[0], TaskSpec("retrieval", "distillation")])


def test_a_checkpoint_loaded_with_its_tokenizer_gets_the_ids_of_its_prompts_text(tiny_encoder_dir, tmp_path):
    """Review item 4: a config whose prompt text was edited kept the old text's token ids through a load and save;
    loading with the tokenizer recomputes them, so the next save carries the right ones."""
    import json

    from sentmtl.serving.loading import load_model_and_tokenizer

    classify = {"name": "classification", "type": "classification", "labels": ["neg", "pos"], "prompt": "query"}
    model, tokenizer = load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, prompts={"query": "i really "}, tasks=[classify]
    )
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config = json.loads(config_file.read_text())
    config["prompts"]["query"] = "this is a "
    config_file.write_text(json.dumps(config))
    loaded, _ = load_model_and_tokenizer(str(tmp_path / "m"))
    assert loaded.config.prompt_token_ids == {
        "this is a ": tokenizer("this is a ", add_special_tokens=False)["input_ids"]
    }


def test_a_continued_run_refuses_another_default_prompt_in_one_line(tiny_encoder_dir, tmp_path):
    """Review item 5: --default_prompt_name on a continued prompted checkpoint was refused while the arguments were
    read ("names no prompt: the model has none", without --prompts), whatever its value. A continued run keeps the
    checkpoint's default: another is refused in one line naming it, the same one is accepted."""
    from sentmtl.serving.loading import build_model, load_model_and_tokenizer
    from sentmtl.training.arguments import ModelArguments

    prompts = {"query": "i really ", "document": "this is a "}
    model, tokenizer = load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, prompts=prompts, default_prompt_name="document"
    )
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    sts = [TaskSpec("sts", "similarity")]
    with pytest.raises(ValueError) as refused:
        build_model(ModelArguments(model_name_or_path=str(tmp_path / "m"), default_prompt_name="query"), sts)
    message = str(refused.value)
    assert "\n" not in message and "architecture" not in message
    assert "--default_prompt_name 'query': " in message and "trained with default_prompt_name='document'" in message
    same, _ = build_model(ModelArguments(model_name_or_path=str(tmp_path / "m"), default_prompt_name="document"), sts)
    assert same.config.default_prompt_name == "document"
    fresh = ModelArguments(model_name_or_path=str(tiny_encoder_dir), embedding_size=16, default_prompt_name="query")
    with pytest.raises(ValueError, match="default_prompt_name='query' names no prompt: the model has none"):
        build_model(fresh, sts)  # a plain encoder has none: refused once the model is built


def _pad_on_the_left(folder):
    """A tokenizer that pads on the left, as its config says (save_pretrained does not write the side)."""
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "padding_side": "left"}))


@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_first_token_pooling_refuses_a_tokenizer_that_pads_on_the_left(tiny_encoder_dir, tmp_path, pooling):
    """A left-padding tokenizer puts a shorter row's pad tokens first, where cls and pooler pooling read."""
    left = tmp_path / "left"
    shutil.copytree(tiny_encoder_dir, left)
    _pad_on_the_left(left)
    with pytest.raises(ValueError, match=f"pooling='{pooling}' reads each row's first token.*{left}.*pads on the left"):
        sentmtl.load_model_and_tokenizer(str(left), embedding_size=16, pooling=pooling)
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(left), embedding_size=16, pooling="mean")
    assert tokenizer.padding_side == "left"  # mean pooling reads the mask: either side embeds alike
    trained = tmp_path / "trained"
    model.config.pooling = "cls"  # a checkpoint edited by hand is checked as it loads, too
    model.save_pretrained(trained)
    tokenizer.save_pretrained(trained)
    _pad_on_the_left(trained)
    with pytest.raises(ValueError, match="pads on the left"):
        sentmtl.load_model_and_tokenizer(str(trained))


def test_a_prompt_the_pipeline_cannot_add_warns_and_the_model_still_builds_and_continues(
    tiny_encoder_dir, tmp_path, caplog
):
    """A byte-level BPE joins "query: " 's space with the next word, so the pipeline could not insert the prompt's
    ids. That is the pipeline's limit, not the model's: a fresh model and a continued run build (training, encode and
    the ONNX runtime prompt the text), with a warning, and the sequence-classification view refuses (it once refused
    the whole run, E5's "query: " on a RoBERTa base included)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from sentmtl.model.prompts import with_pipeline_prompt
    from sentmtl.serving.loading import build_model, load_model_and_tokenizer
    from sentmtl.training.arguments import ModelArguments

    encoder = tmp_path / "bpe-encoder"
    shutil.copytree(tiny_encoder_dir, encoder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (encoder / name).unlink(missing_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["query: the Hello world 1999 don't"] * 20, vocab_size=300, min_frequency=1)
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>").save_pretrained(encoder)
    classify = TaskSpec("classification", "classification", labels=["negative", "positive"], prompt="query")
    with caplog.at_level("WARNING", logger="sentmtl"):
        model, tokenizer = load_model_and_tokenizer(
            str(encoder), embedding_size=16, prompts={"query": "query: "}, tasks=[classify.to_dict()]
        )
    assert model.config.prompt_token_ids is None
    assert "joins its end with the next word" in caplog.text and "pipeline" in caplog.text
    ids = torch.tensor([[0, 5, 6]])
    with pytest.raises(ValueError, match="joins the prompt's end with the text's first word gives none"):
        with_pipeline_prompt(model.config, ids, torch.ones_like(ids), None)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    caplog.clear()
    with caplog.at_level("WARNING", logger="sentmtl"):
        continued, _ = build_model(ModelArguments(model_name_or_path=str(tmp_path / "m")), [classify])
    assert continued.config.prompt_token_ids is None
    assert caplog.text.count("joins its end with the next word") == 1  # once, after the run's tasks are merged
