"""run_embed.py over a large input: a 100,000-line file is embedded in bounded chunks, every line in order."""

import numpy as np

import run_embed
from sentmtl.serving import embed_cli


def test_a_100k_line_file_streams_in_bounded_chunks(embed_flags, tmp_path, monkeypatch, capsys):
    source = tmp_path / "big.txt"
    words = ["good", "bad", "great", "awful", "fine", "boring"]
    with open(source, "w") as handle:
        for i in range(100_000):
            handle.write(f"the movie was {words[i % 6]} .\n")
    seen = []
    real_encode = embed_cli.encode

    def spy(model, sentences, *args, **kwargs):
        seen.append(len(sentences))
        return real_encode(model, sentences, *args, **kwargs)

    monkeypatch.setattr(embed_cli, "encode", spy)
    out = tmp_path / "big.npy"
    assert (
        run_embed.main(
            [
                *embed_flags,
                "--input_file",
                str(source),
                "--output_file",
                str(out),
                "--batch_size",
                "256",
                "--chunk_size",
                "20000",
            ]
        )
        == 0
    )
    # Never more than one chunk of sentences (and of embeddings) in memory; every line embedded, in order.
    assert seen == [20_000] * 5
    embeddings = np.load(out, mmap_mode="r")
    assert embeddings.shape == (100_000, 16)
    np.testing.assert_allclose(embeddings[6], embeddings[0], atol=1e-6)  # same sentence, same row content
    assert not np.allclose(embeddings[0], embeddings[1])
    assert "Embedding" in capsys.readouterr().err  # the progress bar
    assert not (tmp_path / "big.npy.partial").exists()
