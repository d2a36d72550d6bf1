"""sentmtl/serving/embed_cli.py (run_embed.py): the chosen device, and bad inputs (empty files, blank and non-UTF-8
lines, missing columns, over-long sentences) reported with the rest embedded. A 100k-line file:
tests/e2e/test_run_embed.py."""

import json

import numpy as np
import pytest
import torch

import run_embed
import sentmtl


def test_run_embed_puts_the_model_on_the_chosen_device(monkeypatch, tiny_encoder_dir, capsys):
    """run_embed never moved the model to the GPU, yet chose bf16 autocast because the GPU had it."""
    import run_embed

    moved = []
    original = torch.nn.Module.to
    monkeypatch.setattr(
        torch.nn.Module, "to", lambda self, *a, **k: (moved.append(str(a[0]) if a else k), original(self, *a, **k))[1]
    )
    assert (
        run_embed.main(["--model_name_or_path", str(tiny_encoder_dir), "--device", "cpu", "the plot was good ."]) == 0
    )
    assert "cpu" in moved
    monkeypatch.setattr("sentmtl.serving.embed_cli.default_device", lambda: torch.device("cpu"))
    moved.clear()
    assert run_embed.main(["--model_name_or_path", str(tiny_encoder_dir), "the plot was good ."]) == 0
    assert "cpu" in moved  # no --device: the default device, picked once


def test_empty_input_file(embed_flags, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert run_embed.main([*embed_flags, "--input_file", str(empty)]) == 2
    assert f"{empty}: the file is empty; nothing to embed." in capsys.readouterr().err


def test_blank_and_non_utf8_lines_are_reported_and_the_rest_embedded(embed_flags, tmp_path, capsys):
    source = tmp_path / "mixed.txt"
    source.write_bytes(b"the movie was great .\n\n   \nthe food was \xff bad .\nthe plot was boring .\n")
    out = tmp_path / "out.jsonl"
    assert run_embed.main([*embed_flags, "--input_file", str(source), "--output_file", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 3 line(s), embedded 2: line 2: empty sentence ''; line 3: empty sentence '   '; " in err
    assert "line 4: not valid UTF-8 (byte 0xff at column 14)" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["line"], r["sentence"]) for r in rows] == [(1, "the movie was great ."), (5, "the plot was boring .")]
    # The valid rest is embedded exactly as it would be alone.
    model, tokenizer = sentmtl.load_model_and_tokenizer(embed_flags[1])
    expected = sentmtl.encode(model, ["the movie was great .", "the plot was boring ."], tokenizer)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-5)
    # --strict stops at the first bad line instead.
    assert run_embed.main([*embed_flags, "--input_file", str(source), "--strict"]) == 2
    assert f"{source}:2: empty sentence ''" in capsys.readouterr().err


def test_missing_column_in_csv_and_jsonl(embed_flags, tmp_path, capsys):
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("text,label\nthe movie was great .,1\n")
    assert run_embed.main([*embed_flags, "--input_file", str(csv_file)]) == 2
    assert "s.csv: no 'sentence' column (columns: ['text', 'label']); set --text_column" in capsys.readouterr().err
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"sentence": "the food was awful ."}\n{"text": "no field"}\n[1, 2]\n')
    assert run_embed.main([*embed_flags, "--input_file", str(jsonl)]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 line(s), embedded 1: line 2: no 'sentence' field (found ['text'])" in err
    assert "line 3: no 'sentence' field (found list)" in err
    jsonl.write_text('{"text": "a"}\n')
    assert run_embed.main([*embed_flags, "--input_file", str(jsonl)]) == 2
    assert "no line has a 'sentence' field" in capsys.readouterr().err


def test_over_long_sentences_are_truncated_and_counted(embed_flags, tmp_path, capsys):
    source = tmp_path / "long.txt"
    long_sentence = "the movie was great . " * 40  # ~200 tokens; the tiny encoder takes 64
    source.write_text(f"short one .\n{long_sentence}\n{long_sentence}\n")
    out = tmp_path / "e.npy"
    assert run_embed.main([*embed_flags, "--input_file", str(source), "--output_file", str(out)]) == 0
    assert "Truncated 2 of 3 sentences longer than 64 tokens (lines 2, 3)." in capsys.readouterr().err
    embeddings = np.load(out)
    assert embeddings.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("export", ["--export_onnx", "--export_sentence_transformer"])
@pytest.mark.parametrize("prompt", [["--prompt_name", "query"], ["--prompt", "query: "]])
def test_run_embed_refuses_a_prompt_on_an_export(export, prompt, tiny_encoder_dir, capsys):
    """An export keeps the model's prompts and takes them by name at encode time; one given here would be lost."""
    with pytest.raises(SystemExit):
        run_embed.main(["--model_name_or_path", str(tiny_encoder_dir), export, "out", *prompt])
    assert (
        "--prompt_name / --prompt apply when embedding; an export keeps the model's prompts" in capsys.readouterr().err
    )
