"""Prompts: named text prefixes that a model's inputs take (E5's "query: " / "passage: ", BGE's query instruction,
nomic's "search_query: "), kept in its config (`SentMtlConfig.prompts`) and applied on every path that reads text.

A prompt is prepended to the text before tokenisation, as sentence-transformers does, so an export's
`SentenceTransformer.encode(prompt_name=...)` gives what `sentmtl.encode(prompt_name=...)` gives. Pooling includes the
prompt's tokens on every path (sentence-transformers' `include_prompt=True`, its default). Texts are cut at their end
(right truncation), never in the prompt, and a prompt that leaves no room for text is refused (`check_prompt_room`).

Which prompt a text takes: the one its task names for that text (`TaskSpec.prompt`: a prompt name for every text the
task reads, or {role: name} for the roles of `ROLES` its type reads), else the model's `default_prompt_name`, else
none. `encode` takes the default unless told `prompt_name=` or `prompt=`.

The text-classification pipeline tokenises by itself, without the prompt: the sequence-classification view inserts
the prompt's token ids (`prompt_token_ids`, kept in the config under the prompt's text) after the first token of every row that lacks them
(`insert_prompt_ids`). Only torch and the standard library here: this file travels beside the weights.
"""

import torch

# The texts of a row that a task type may read: the sentence (a contrastive task's anchor), the second sentence of a
# pair (its positive) and the hard negatives.
ROLES = ("text", "text_pair", "negatives")
# Probe words for `prompt_token_ids`: a prompt's ids must be the start of every prompted text's ids.
_PROBES = ("the", "Hello world", "1999", "don't", "ünïcödé")


def check_prompts(prompts, default_prompt_name) -> dict | None:
    """`prompts` as {name: text} (or None), checked with `default_prompt_name`; a ValueError names what is wrong."""
    if prompts is None or prompts == {}:
        if default_prompt_name is not None:
            raise ValueError(f"default_prompt_name={default_prompt_name!r} names no prompt: the model has none.")
        return None
    if not isinstance(prompts, dict):
        raise ValueError(f"prompts={prompts!r}: a mapping of prompt names to texts, e.g. {{query: 'query: '}}.")
    for name, text in prompts.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"prompt name {name!r} must be an identifier (letters, digits, _).")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt {name!r}: {text!r} is not a text; a prompt is a non-empty prefix.")
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise ValueError(
            f"default_prompt_name={default_prompt_name!r} is not one of the prompts ({', '.join(prompts)})."
        )
    return dict(prompts)


def task_prompt_names(prompt, roles: tuple[str, ...], where: str) -> dict[str, str]:
    """A task's `prompt` field as {role: prompt name} over the roles its type reads (`roles`): a name applies to each
    of them; a mapping names some. A ValueError for a role the type does not read, or a type that reads no text."""
    if prompt is None:
        return {}
    if not roles:
        raise ValueError(f"{where}: prompt {prompt!r}, but this task's type reads no text for a prompt to prefix.")
    if isinstance(prompt, str):
        return dict.fromkeys(roles, prompt)
    if not isinstance(prompt, dict) or not all(isinstance(v, str) for v in prompt.values()):
        raise ValueError(
            f"{where}: prompt {prompt!r}: a prompt name, or {{role: prompt name}} for its texts ({', '.join(roles)})."
        )
    unknown = sorted(set(prompt) - set(roles))
    if unknown:
        raise ValueError(f"{where}: prompt roles {unknown}: this task's type reads only {', '.join(roles)}.")
    return dict(prompt)


def resolve_prompt(prompts: dict | None, default_prompt_name, prompt_name=None, prompt=None) -> str:
    """The prefix `encode` applies: `prompt` as given, else the named prompt, else the default one, else none."""
    if prompt is not None and prompt_name is not None:
        raise ValueError("give prompt= or prompt_name=, not both.")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise ValueError(f"prompt={prompt!r} must be a string.")
        return prompt
    if prompt_name is not None:
        if not prompts or prompt_name not in prompts:
            known = ", ".join(prompts) if prompts else "none: it was trained without prompts"
            raise ValueError(f"prompt_name={prompt_name!r} is not one of the model's prompts ({known}).")
        return prompts[prompt_name]
    return prompts[default_prompt_name] if prompts and default_prompt_name else ""


def prompt_token_ids(tokenizer, text: str) -> list[int]:
    """The ids `text` contributes at the start of every prompted sentence (the tokenizer's own, no special tokens).
    Checked on probe sentences: a tokenizer that merges the prompt's end with the first word (a BPE prompt ending in a
    space) would make the pipeline's inserted ids differ from the prompted text's, so it is refused."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for probe in _PROBES:
        joined = tokenizer(text + probe, add_special_tokens=False)["input_ids"]
        alone = tokenizer(probe, add_special_tokens=False)["input_ids"]
        if joined != ids + alone:
            raise ValueError(
                f"prompt {text!r}: this tokenizer ({type(tokenizer).__name__}) joins its end with the next word "
                f"({joined[: len(ids) + 2]} for {text + probe!r}, not {ids} + {alone[:2]}), so a pipeline that "
                "tokenises the text alone could not add the prompt by token ids."
            )
    return ids


def check_prompt_room(prompts: dict | None, tokenizer, max_length: int) -> None:
    """Refuse a prompt that leaves no token for the text under `max_length` (specials counted), and a tokenizer that
    truncates on the left (it would cut the prompt)."""
    if not prompts:
        return
    if getattr(tokenizer, "truncation_side", "right") != "right":
        raise ValueError(
            f"the tokenizer truncates on the {tokenizer.truncation_side}, which would cut the prompts: set "
            "tokenizer.truncation_side = 'right'."
        )
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    for name, text in prompts.items():
        used = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + specials
        if used >= max_length:
            raise ValueError(
                f"prompt {name!r} ({text!r}) takes {used} of the {max_length} tokens (with the special ones), leaving "
                "no room for the text: shorten it or raise --max_length."
            )


def with_pipeline_prompt(config, input_ids, attention_mask, token_type_ids):
    """The sequence-classification view's inputs with its task's prompt (`config.pipeline_prompt_name()`) inserted
    as token ids where a row lacks them (`insert_prompt_ids`): sentmtl's own callers prompt the text, and those rows
    already carry them. Unchanged without a prompt."""
    name = config.pipeline_prompt_name()
    if name is None:
        return input_ids, attention_mask, token_type_ids
    text = config.prompts[name]
    ids = (config.prompt_token_ids or {}).get(text)  # keyed by the text: a changed prompt's old ids are not found
    if ids is None:
        raise ValueError(
            f"the first classification task takes the prompt {name!r} ({text!r}), whose token ids are not in this "
            f"config (prompt_token_ids has them for {sorted(config.prompt_token_ids or {})}): load and save the model "
            "through sentmtl (sentmtl.load_model_and_tokenizer), or call config.set_prompt_token_ids(tokenizer) "
            "before saving. A tokenizer that joins the prompt's end with the text's first word gives none: prompt "
            "the text with sentmtl (encode, or the model on prompted text) or the ONNX runtime instead."
        )
    return insert_prompt_ids(input_ids, attention_mask, token_type_ids, ids, position_limit(config.encoder_config))


# Encoders whose position ids start after the padding index (RoBERTa's scheme): two positions fewer than
# `max_position_embeddings` are usable.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")


def position_limit(encoder_config) -> int:
    """The longest input the encoder's position embeddings take."""
    limit = getattr(encoder_config, "max_position_embeddings", 512)
    return limit - 2 if encoder_config.model_type in _OFFSET_POSITIONS else limit


def insert_prompt_ids(input_ids, attention_mask, token_type_ids, ids: list[int], max_positions: int):
    """Each row that does not already carry `ids` right after its first token gets them there (the pipeline's inputs,
    tokenised without the prompt). A row that would then exceed `max_positions` loses text tokens before its last
    one (the end token), never the prompt's. Returns the three tensors (`token_type_ids` may be None).

    Vectorised, with no host read and no shape that depends on the data (torch.compile traces it whole, and a GPU
    never waits): the result is `max(width, min(width + len(ids), max_positions))` wide whatever the rows hold. Its
    rows are where a data-sized result would put them (a left-padded batch stays padded on the left up to the
    longest row); the columns past the longest row are padding, attention mask 0."""
    if not ids:
        return input_ids, attention_mask, token_type_ids
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    k = len(ids)
    prompt = torch.tensor(ids, dtype=input_ids.dtype, device=input_ids.device)
    width = input_ids.shape[1]
    kept = attention_mask.bool()
    count = kept.sum(dim=1, keepdim=True)  # [rows, 1]: each row's tokens
    # Each row's tokens moved to its front, in order (a stable sort puts the kept positions first).
    order = torch.sort((~kept).to(torch.uint8), dim=1, stable=True).indices
    tokens = input_ids.gather(1, order)
    carries = (count[:, 0] > k) & (tokens[:, 1 : 1 + k] == prompt).all(dim=1) if width > k else count[:, 0] < 0
    insert = ~carries[:, None]
    start = (count > 0).long()  # the prompt goes after the first token (a row with none: at the front)
    length = count + k * insert
    cut = insert & (length > max_positions)  # then its last token takes the last position
    length = torch.where(cut, max_positions, length)
    # Output column c holds row position p = c − shift: a left-padded batch ends every row at the longest row.
    out_width = max(width, min(width + k, max_positions))
    left = (attention_mask[:, 0] == 0).any()
    shift = torch.where(left, length.max() - length, 0)
    p = torch.arange(out_width, device=input_ids.device)[None, :] - shift
    valid = (p >= 0) & (p < length)
    in_prompt = insert & (p >= start) & (p < start + k)
    source = torch.where(insert & (p >= start + k), p - k, p)  # the row position's token, past the prompt
    source = torch.where(cut & (p == length - 1), count - 1, source).clamp(0, width - 1)
    prompt_part = prompt[(p - start).clamp(0, k - 1)]
    # The batch's padding id: the first padded position's (0 without padding), as the tokenizer padded.
    padded = ~kept.reshape(-1)
    first = padded.to(torch.uint8).argmax().reshape(1)  # gathered, not indexed: a 0-d index would be read back
    pad_id = torch.where(padded.any(), input_ids.reshape(-1).gather(0, first)[0], 0)
    out_ids = torch.where(valid, torch.where(in_prompt, prompt_part, tokens.gather(1, source)), pad_id)
    out_types = None
    if token_type_ids is not None:
        types = token_type_ids.gather(1, order).gather(1, source)
        out_types = torch.where(valid & ~in_prompt, types, 0)
    return out_ids, valid.to(attention_mask.dtype), out_types


__all__ = [
    "ROLES",
    "check_prompt_room",
    "check_prompts",
    "insert_prompt_ids",
    "prompt_token_ids",
    "position_limit",
    "resolve_prompt",
    "task_prompt_names",
    "with_pipeline_prompt",
]
