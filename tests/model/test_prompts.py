"""Prompts: their checks, which prompt a task's texts take, the pipeline's token-id insertion and the room left for text."""

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from sentmtl.model.configuration_sentmtl import SentMtlConfig
from sentmtl.model.prompts import (
    check_prompt_room,
    check_prompts,
    insert_prompt_ids,
    prompt_token_ids,
    resolve_prompt,
    task_prompt_names,
)
from sentmtl.model.task_spec import TaskSpec

PROMPTS = {"query": "i really ", "document": "this is a "}


@pytest.mark.parametrize(
    "prompts, default, message",
    [
        ({"query": ""}, None, "non-empty prefix"),
        ({"a query": "q: "}, None, "identifier"),
        ({"query": 3}, None, "not a text"),
        (["query: "], None, "mapping of prompt names"),
        ({"query": "q: "}, "document", "not one of the prompts"),
        (None, "query", "names no prompt"),
    ],
)
def test_bad_prompts_are_refused_with_what_is_accepted(prompts, default, message):
    with pytest.raises(ValueError, match=message):
        check_prompts(prompts, default)


def test_a_prompt_name_covers_every_text_its_type_reads_and_a_mapping_names_some():
    assert task_prompt_names("query", ("text", "text_pair"), "t") == {"text": "query", "text_pair": "query"}
    assert task_prompt_names({"text_pair": "document"}, ("text", "text_pair"), "t") == {"text_pair": "document"}
    with pytest.raises(ValueError, match=r"roles \['text_pair'\]: this task's type reads only text"):
        TaskSpec("c", "classification", labels=["a", "b"], prompt={"text_pair": "query"})
    with pytest.raises(ValueError, match="reads no text"):
        task_prompt_names("query", (), "t")
    with pytest.raises(ValueError, match="a prompt name, or"):
        TaskSpec("c", "classification", labels=["a", "b"], prompt=["query"])


def test_a_prompt_on_a_type_that_reads_no_text_is_refused(monkeypatch):
    """Every built-in type reads a text; a registered type that reads none refuses a prompt by the task's name."""
    from sentmtl.model.task_types import TASK_TYPES

    class ReadsNoText(type(TASK_TYPES["regression"])):
        name = "reads_no_text"

        @property
        def text_roles(self):
            return ()

    monkeypatch.setitem(TASK_TYPES, ReadsNoText.name, ReadsNoText())
    assert TaskSpec("score", ReadsNoText.name).prompt is None
    with pytest.raises(ValueError, match=r"task 'score'.*prompt 'query'.*reads no text"):
        TaskSpec("score", ReadsNoText.name, prompt="query")


def test_the_config_resolves_each_texts_prompt_with_the_default_and_negatives_as_documents():
    config = SentMtlConfig(
        prompts=PROMPTS,
        default_prompt_name="query",
        tasks=[
            {"name": "retrieval", "type": "contrastive", "prompt": {"text_pair": "document"}},
            {"name": "classification", "type": "classification", "labels": ["n", "p"]},
        ],
    )
    retrieval, classification = config.task_specs
    assert config.prompt_for(retrieval, "text") == "i really "  # the default
    assert config.prompt_for(retrieval, "text_pair") == "this is a "
    assert config.prompt_for(retrieval, "negatives") == "this is a "  # hard negatives are documents
    assert config.prompt_for(classification, "text") == "i really "
    assert config.pipeline_prompt_name() == "query"
    # Saved and loaded: the config keeps them, and a task naming an unknown prompt is refused.
    assert SentMtlConfig.from_dict(config.to_dict()).prompts == PROMPTS
    with pytest.raises(ValueError, match=r"names the prompt\(s\) \['passage'\]; the model's prompts: query, document"):
        SentMtlConfig(prompts=PROMPTS, tasks=[{"name": "s", "type": "similarity", "prompt": "passage"}])


def test_a_task_without_a_prompt_keeps_its_config_unchanged():
    assert "prompt" not in TaskSpec("s", "similarity").to_dict()
    assert TaskSpec("s", "similarity", prompt="query").to_dict()["prompt"] == "query"


def test_resolve_prompt_follows_sentence_transformers_rule():
    assert resolve_prompt(PROMPTS, "query") == "i really "
    assert resolve_prompt(PROMPTS, "query", prompt_name="document") == "this is a "
    assert resolve_prompt(PROMPTS, "query", prompt="") == ""  # as given: no prompt
    assert resolve_prompt(None, None) == ""
    with pytest.raises(ValueError, match="not both"):
        resolve_prompt(PROMPTS, None, prompt_name="query", prompt="x")
    with pytest.raises(
        ValueError, match=r"prompt_name='passage' is not one of the model's prompts \(query, document\)"
    ):
        resolve_prompt(PROMPTS, None, prompt_name="passage")
    with pytest.raises(ValueError, match="trained without prompts"):
        resolve_prompt(None, None, prompt_name="query")


def test_prompt_token_ids_are_the_start_of_every_prompted_text(tiny_tokenizer):
    ids = prompt_token_ids(tiny_tokenizer, "i really ")
    for text in ("the movie was good", "bad"):
        joined = tiny_tokenizer("i really " + text, add_special_tokens=False)["input_ids"]
        assert joined[: len(ids)] == ids and len(ids) == 2


def test_the_pipelines_prompt_ids_are_never_those_of_an_earlier_text(tiny_tokenizer):
    """Review item 4: the ids were keyed by the prompt's name, so a prompt whose text changed under the same name (a
    config edited) had the old text's ids inserted. Keyed by the text, they are not found: refused, naming both."""
    from sentmtl.model.prompts import with_pipeline_prompt

    classify = {"name": "classification", "type": "classification", "labels": ["neg", "pos"], "prompt": "query"}
    config = SentMtlConfig(prompts=dict(PROMPTS), tasks=[classify])
    config.set_prompt_token_ids(tiny_tokenizer)
    batch = tiny_tokenizer(["the movie was good"], return_tensors="pt")
    ids, _, _ = with_pipeline_prompt(config, batch["input_ids"], batch["attention_mask"], None)
    assert ids[0].tolist() == tiny_tokenizer("i really the movie was good")["input_ids"]
    config.prompts["query"] = "this is a "  # the text changed, the name did not
    with pytest.raises(ValueError, match=r"prompt 'query' \('this is a '\), whose token ids are not in this config"):
        with_pipeline_prompt(config, batch["input_ids"], batch["attention_mask"], None)
    config.set_prompt_token_ids(tiny_tokenizer)
    ids, _, _ = with_pipeline_prompt(config, batch["input_ids"], batch["attention_mask"], None)
    assert ids[0].tolist() == tiny_tokenizer("this is a the movie was good")["input_ids"]


def _byte_level_bpe():
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["query: the Hello world 1999 don't"] * 20, vocab_size=300, min_frequency=1)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)


def test_a_prompt_whose_end_merges_with_the_text_is_refused_for_the_pipeline():
    """A byte-level BPE joins "query: " 's space with the next word ("Ġthe"): inserting the prompt's own ids would
    give the pipeline other tokens than the prompted text. Without the space, it splits where the text starts."""
    tokenizer = _byte_level_bpe()
    with pytest.raises(ValueError, match="joins its end with the next word"):
        prompt_token_ids(tokenizer, "query: ")
    assert prompt_token_ids(tokenizer, "query:")


def test_a_prompt_that_leaves_no_room_for_text_is_refused(tiny_tokenizer):
    check_prompt_room(PROMPTS, tiny_tokenizer, 8)
    with pytest.raises(ValueError, match=r"prompt 'document' \('this is a '\) takes 5 of the 5 tokens"):
        check_prompt_room(PROMPTS, tiny_tokenizer, 5)
    tiny_tokenizer.truncation_side = "left"
    try:
        with pytest.raises(ValueError, match="truncates on the left"):
            check_prompt_room(PROMPTS, tiny_tokenizer, 64)
    finally:
        tiny_tokenizer.truncation_side = "right"


def _assert_inserted(got, expected, pad_id=0):
    """`got` (ids, mask, types) holds the `expected` batch's rows, then padding (mask 0) out to its fixed width."""
    width = expected["input_ids"].shape[1]
    for name, tensor, fill in zip(("input_ids", "attention_mask", "token_type_ids"), got, (pad_id, 0, 0)):
        if tensor is None:
            continue
        assert torch.equal(tensor[:, :width], expected[name]), name
        assert (tensor[:, width:] == fill).all(), name


def test_insert_prompt_ids_adds_them_after_the_first_token_of_rows_without_them(tiny_tokenizer):
    prompt = prompt_token_ids(tiny_tokenizer, "i really ")
    plain = ["the movie was good", "bad"]
    prompted = tiny_tokenizer(["i really " + t for t in plain], padding=True, return_tensors="pt")
    mixed = tiny_tokenizer([plain[0], "i really " + plain[1]], padding=True, return_tensors="pt")
    batch = tiny_tokenizer(plain, padding=True, return_tensors="pt")
    for given in (batch, mixed, prompted):  # none, one or every row already prompted
        got = insert_prompt_ids(given["input_ids"], given["attention_mask"], given["token_type_ids"], prompt, 64)
        _assert_inserted(got, prompted)
        # A fixed width, whatever the rows hold (no shape depends on the data): the input's, plus the prompt's.
        assert got[0].shape[1] == given["input_ids"].shape[1] + len(prompt)


def test_insert_prompt_ids_keeps_left_padding_and_cuts_text_not_the_prompt(tiny_tokenizer):
    prompt = prompt_token_ids(tiny_tokenizer, "i really ")
    tiny_tokenizer.padding_side = "left"
    try:
        batch = tiny_tokenizer(["the movie was good", "bad"], padding=True, return_tensors="pt")
        expected = tiny_tokenizer(["i really the movie was good", "i really bad"], padding=True, return_tensors="pt")
    finally:
        tiny_tokenizer.padding_side = "right"
    ids, mask, _ = insert_prompt_ids(batch["input_ids"], batch["attention_mask"], None, prompt, 64)
    _assert_inserted((ids, mask, None), expected)
    # A row at the position limit loses text before its end token, never the prompt.
    long = tiny_tokenizer(["the movie was good"], return_tensors="pt")  # [CLS] 4 words [SEP]: 6 tokens
    ids, mask, _ = insert_prompt_ids(long["input_ids"], long["attention_mask"], None, prompt, 6)
    words = tiny_tokenizer.convert_ids_to_tokens(ids[0])
    assert words == ["[CLS]", "i", "really", "the", "movie", "[SEP]"] and mask.sum() == 6


def _insert_row_by_row(input_ids, attention_mask, token_type_ids, ids, max_positions):
    """`insert_prompt_ids` as it was before it was vectorised (issue 33): row by row, sized by the data."""
    prompt = torch.tensor(ids, dtype=input_ids.dtype)
    rows, width = [], len(ids)
    for row in range(input_ids.shape[0]):
        kept = attention_mask[row].bool()
        tokens = input_ids[row][kept]
        types = token_type_ids[row][kept] if token_type_ids is not None else None
        if not (len(tokens) > width and torch.equal(tokens[1 : 1 + width], prompt)):
            tokens = torch.cat([tokens[:1], prompt, tokens[1:]])
            if types is not None:
                types = torch.cat([types[:1], types.new_zeros(width), types[1:]])
            if len(tokens) > max_positions:
                tokens = torch.cat([tokens[: max_positions - 1], tokens[-1:]])
                types = None if types is None else torch.cat([types[: max_positions - 1], types[-1:]])
        rows.append((tokens, types))
    longest = max(len(tokens) for tokens, _ in rows)
    left = bool((attention_mask[:, 0] == 0).any())
    pad = input_ids[~attention_mask.bool()]
    pad_id = int(pad[0]) if pad.numel() else 0
    out_ids = input_ids.new_full((len(rows), longest), pad_id)
    out_mask = attention_mask.new_zeros((len(rows), longest))
    out_types = None if token_type_ids is None else token_type_ids.new_zeros((len(rows), longest))
    for row, (tokens, types) in enumerate(rows):
        span = slice(longest - len(tokens), longest) if left else slice(0, len(tokens))
        out_ids[row, span], out_mask[row, span] = tokens, 1
        if out_types is not None:
            out_types[row, span] = types
    return out_ids, out_mask, out_types, pad_id


@pytest.mark.parametrize("seed", range(40))
def test_insert_prompt_ids_puts_every_token_where_the_row_by_row_version_did(seed):
    """Random batches (left or right padding, rows with and without the prompt, rows cut at the position limit,
    token types or none, an unusual padding id): the same tokens, mask and types in the same columns as the former
    row-by-row version, then padding."""
    generator = torch.Generator().manual_seed(seed)
    randint = lambda low, high, size=(): torch.randint(low, high, size, generator=generator)  # noqa: E731
    rows, width, k = int(randint(1, 5)), int(randint(2, 9)), int(randint(1, 4))
    prompt = randint(50, 60, (k,)).tolist()
    max_positions = int(randint(max(k + 2, width - 1), width + k + 2))
    pad_id = int(randint(0, 2)) * 7
    counts = randint(1, width + 1, (rows,))
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    left = bool(randint(0, 2))
    for row, count in enumerate(counts.tolist()):
        tokens = torch.cat([torch.tensor([1]), randint(10, 40, (count - 1,))])
        if count > k + 1 and bool(randint(0, 2)):  # already prompted
            tokens[1 : 1 + k] = torch.tensor(prompt)
        span = slice(width - count, width) if left else slice(0, count)
        ids[row, span], mask[row, span] = tokens, 1
    types = randint(0, 2, (rows, width)) * mask if bool(randint(0, 2)) else None
    *expected, expected_pad = _insert_row_by_row(ids, mask, types, prompt, max_positions)
    got = insert_prompt_ids(ids, mask, types, prompt, max_positions)
    _assert_inserted(got, dict(zip(("input_ids", "attention_mask", "token_type_ids"), expected)), expected_pad)
    assert got[0].shape[1] == max(width, min(width + k, max_positions))
