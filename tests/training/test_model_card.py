"""sentmtl/training/model_card.py: the usage snippets of a prompted model."""

import ast
import re

from sentmtl.model.configuration_sentmtl import SentMtlConfig
from sentmtl.training.model_card import build_model_card


def _python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def test_the_usage_embeds_retrieval_queries_and_documents_each_with_its_prompt():
    """Review item 5: the snippet showed the first prompt (here `document`) as the queries' one; it now names the
    prompt the retrieval task's anchors and positives were trained with, in sentmtl's and sentence-transformers'
    calls, and every Python block still parses."""
    retrieval = {"name": "retrieval", "type": "contrastive", "prompt": {"text": "query"}}
    config = SentMtlConfig(
        prompts={"document": "passage: ", "query": "query: "}, default_prompt_name="document", tasks=[retrieval]
    )
    card = build_model_card(config, {}, {})
    assert (
        'queries = sentmtl.encode(model, ["How long does the battery last?"], tokenizer, prompt_name="query")' in card
    )
    assert (
        'documents = sentmtl.encode(model, ["The battery lasts two days."], tokenizer, prompt_name="document")' in card
    )
    assert 'SentenceTransformer("st-model/").encode(["How long does the battery last?"], prompt_name="query")' in card
    for block in _python_blocks(card):
        ast.parse(block)
    # Only the side trained with a prompt, where there is no default.
    config.default_prompt_name = None
    card = build_model_card(config, {}, {})
    assert 'prompt_name="query")  # retrieval queries' in card and "documents = " not in card
    plain = build_model_card(SentMtlConfig(tasks=[{"name": "retrieval", "type": "contrastive"}]), {}, {})
    assert "prompt_name" not in plain and "prompt=" not in plain


def test_the_pipeline_is_offered_only_when_it_can_add_the_classification_prompt():
    """A prompt the tokenizer merges with the text keeps no token ids (the model trains, with a warning): the card
    then says the pipeline refuses, rather than showing a snippet that raises."""
    classify = {"name": "c", "type": "classification", "labels": ["negative", "positive"], "prompt": "query"}
    config = SentMtlConfig(prompts={"query": "query: "}, tasks=[classify], prompt_token_ids={"query: ": [5, 6]})
    card = build_model_card(config, {}, {})
    assert 'pipeline("text-classification"' in card and "the pipeline adds its task's prompt itself" not in card
    assert "the text-classification pipeline adds its task's prompt itself." in card
    config.prompt_token_ids = None
    card = build_model_card(config, {}, {})
    assert 'pipeline("text-classification"' not in card
    assert "has no text-classification pipeline" in card and "cannot add its task's prompt" in card
    plain = build_model_card(SentMtlConfig(tasks=[{k: v for k, v in classify.items() if k != "prompt"}]), {}, {})
    assert 'pipeline("text-classification"' in plain
