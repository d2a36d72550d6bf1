"""sentmtl/training/run_checks.py and the LoRA flags of model_arguments.py: what a LoRA run refuses before any model
loads, each in one line naming the flag and what is accepted (without peft installed: tests/e2e/test_lora_runs.py);
activation checkpointing with an encoder that cannot checkpoint its layers, refused before the data is prepared."""

import re

import pytest
from helpers import encoder_dir, tiny_run_flags

from sentmtl.training.run import main, parse_args


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora_r", "4", "--freeze_backbone"], "--freeze_backbone with --lora_r 4: LoRA keeps the encoder's weights"),
        (
            ["--lora_r", "4", "--freeze_backbone_layers", "1", "--unfreeze_backbone_at_epoch", "1"],
            "--unfreeze_backbone_at_epoch with --lora_r 4: .* it would train the whole encoder",
        ),
        (["--merge_lora", "true"], "--merge_lora without --lora_r: there are no LoRA adapters"),
        (["--lora_alpha", "16", "--lora_dropout", "0"], "--lora_alpha, --lora_dropout without --lora_r"),
        (["--lora_r", "0"], "--lora_r 0 must be a positive integer"),
        (["--lora_r", "4", "--lora_dropout", "1"], r"--lora_dropout 1.0 must be in \[0, 1\)"),
    ],
)
def test_lora_combinations_are_refused_before_any_model_loads(
    tiny_encoder_dir, synthetic_csv, tmp_path, capsys, no_model_loads, flags, message
):
    code = main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x", *flags))
    assert code in (1, 2)
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("run_mtl.py: error:")
    assert re.search(message, last_line), last_line


def test_prompt_flags_split_at_the_first_equals_and_a_bad_item_is_named(tmp_path):
    model_args, _, _ = parse_args(["--prompts", "query=query: ", "doc=a=b", "--output_dir", str(tmp_path)])
    assert model_args.prompts == {"query": "query: ", "doc": "a=b"}
    for items, message in ((["query"], "--prompts 'query': give name=text"), (["q=a", "q=b"], "names 'q' twice")):
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_args(["--prompts", *items, "--output_dir", str(tmp_path)])


def test_lora_flags_and_their_defaults(tmp_path):
    model_args, _, _ = parse_args(["--lora_r", "8", "--output_dir", str(tmp_path)])
    assert model_args.lora_settings() == {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": None}
    model_args, _, _ = parse_args(
        ["--lora_r", "8", "--lora_alpha", "8", "--lora_target_modules", "query", "value", "--output_dir", str(tmp_path)]
    )
    assert model_args.lora_settings()["alpha"] == 8 and model_args.lora_settings()["target_modules"] == [
        "query",
        "value",
    ]
    assert parse_args(["--output_dir", str(tmp_path)])[0].lora_settings() is None


@pytest.mark.parametrize("flag", ["--activation_checkpointing", "--gradient_checkpointing"])
def test_activation_checkpointing_an_encoder_without_it_is_refused_before_the_data(
    tiny_encoder_dir, synthetic_csv, tmp_path, capsys, monkeypatch, flag
):
    import sentmtl.training.run as run_module

    def no_data(*args, **kwargs):
        raise AssertionError("the data was prepared before the refusal")

    monkeypatch.setattr(run_module, "build_run_data", no_data)
    xlm = encoder_dir(tmp_path, "xlm", tiny_encoder_dir)  # neither transformers nor sentmtl checkpoints its layers
    code = main(tiny_run_flags(xlm, synthetic_csv, tmp_path / "x", flag, "true"))
    assert code == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"encoder \(XLMModel, model_type xlm\) does not support activation checkpointing", last_line)


@pytest.mark.parametrize("flags", [[], ["--allow_pickle_weights"]])
def test_allow_pickle_weights_reaches_the_data_the_run_prepares(
    tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, flags
):
    """The teachers and miners a run names are built while its data is prepared: the flag must get there."""
    import sentmtl.training.run as run_module

    seen = []

    def recording(*args, **kwargs):
        seen.append(args[7] if len(args) > 7 else kwargs["allow_pickle_weights"])
        raise RuntimeError("stop after the data")

    monkeypatch.setattr(run_module, "build_run_data", recording)
    with pytest.raises(RuntimeError, match="stop after the data"):
        main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x", *flags))
    assert seen == [bool(flags)]
