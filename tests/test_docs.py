"""The documentation against the code: README.md, docs/*.md and results/README.md must not drift from what the
commands accept.

- every `--flag` in the text is an option of the command it belongs to: run_mtl.py (the argument dataclasses),
  run_embed.py, `python -m sentmtl.serving.hub` (only where the text names it) or a script in benchmarks/ (only where the
  text names benchmarks/); flags of other tools (pip, accelerate) are allowed only next to that tool's name;
- every key in a ```yaml block is a run argument, a task field or a key of a task's `data:` mapping, and a block
  that starts with `# configs/<name>.yaml` shows that file's values;
- every ```python block runs, on a tiny random model saved at output/sentmtl (the path the snippets load from);
- relative links point at files (and headings) that exist.

Fast: nothing trains; the benchmark scripts are only asked for `--help`.
"""

import argparse
import dataclasses
import os
import re
import subprocess
import sys
from unittest import mock

import pytest
import yaml
from helpers import REPO_ROOT

DOC_FILES = [
    "README.md",
    *sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").glob("*.md")),
    "results/README.md",
]

# `--name`, hyphenated names included (`--dry-run`, `--no-deps`), not the middle of a word or of `---`.
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]")
FENCE = re.compile(r"^\s*```(\S*)\s*$")

# Flags of other tools, each allowed only in a paragraph or code block that names the tool (so `run_mtl.py --cpu`
# alone would still be caught).
FOREIGN_FLAGS = {
    "--num_processes": "accelerate",  # accelerate launch --num_processes 2
    "--multi_gpu": "accelerate",  # accelerate launch --multi_gpu
    "--cpu": "accelerate",  # accelerate launch --cpu (the docs explain why not to use it)
    "--no-deps": "pip",  # pip install --no-deps
    "--force-reinstall": "pip",  # pip install --force-reinstall
    "--no-build-isolation": "pip",  # pip install flash-attn --no-build-isolation (encode's unpadded batches)
    "--system-site-packages": "venv",  # python -m venv --system-site-packages (a venv for sentence-transformers' ONNX rows)
    "--include": "hf download",  # hf download user/name --include 'onnx/*'
    "--local-dir": "hf download",  # hf download ... --local-dir DIR
    "--ignore": "pytest",  # python -m pytest tests --ignore=tests/e2e (the fast subset, docs/development.md)
}

# Where the task definitions live: sentmtl.data.sources, or the module the refactor moves them to.
TASK_MODULES = ("sentmtl.data.sources", "sentmtl.data.plan")

# The keys of a task's `data:` mapping, when no module exposes them as `DATA_KEYS` (sentmtl/data/sources.py reads them in
# `_raw_splits`): {train_file, validation_file}, {stsb}, {dataset, train_split, eval_split}.
FALLBACK_DATA_KEYS = {"train_file", "validation_file", "stsb", "dataset", "train_split", "eval_split"}


# -- reading the docs -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Chunk:
    """A fenced code block (`lang` is its info string) or a paragraph of text (`lang` None), from `line` on."""

    line: int
    lang: str | None
    text: str


def chunks(path: str) -> list[Chunk]:
    out, lines, start, lang, in_code = [], [], 1, None, False
    for number, line in enumerate((REPO_ROOT / path).read_text().splitlines(), start=1):
        fence = FENCE.match(line)
        if in_code:
            if fence and not fence.group(1):
                out.append(Chunk(start, lang, "\n".join(lines)))
                lines, in_code = [], False
            else:
                lines.append(line)
        elif fence:
            if lines:
                out.append(Chunk(start, None, "\n".join(lines)))
            lines, start, lang, in_code = [], number + 1, fence.group(1), True
        elif not line.strip():
            if lines:
                out.append(Chunk(start, None, "\n".join(lines)))
            lines = []
        else:
            if not lines:
                start = number
            lines.append(line)
    assert not in_code, f"{path}: a code block opened at line {start - 1} is never closed"
    if lines:
        out.append(Chunk(start, None, "\n".join(lines)))
    return out


def code_blocks(lang: str) -> list:
    return [
        pytest.param(path, chunk, id=f"{path}:{chunk.line}")
        for path in DOC_FILES
        for chunk in chunks(path)
        if chunk.lang == lang
    ]


def test_the_doc_files_are_there():
    for path in (
        "README.md",
        "docs/tasks.md",
        "docs/training.md",
        "docs/sharing.md",
        "docs/reliability.md",
        "docs/data.md",
        "docs/performance.md",
        "results/README.md",
    ):
        assert path in DOC_FILES and (REPO_ROOT / path).is_file(), path


# -- what the commands accept -----------------------------------------------------------------------------------------


def usage_flags(command: list[str]) -> set[str]:
    """The options in a command's `--help` usage block (argparse lists every visible option there)."""
    result = subprocess.run(
        [sys.executable, *command, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{' '.join(command)} --help failed:\n{result.stderr[-2000:]}"
    usage = result.stdout.split("\n\n", 1)[0]
    return set(FLAG.findall(usage)) | {"--help"}


class _Parsed(Exception):
    pass


def parser_flags(call, fallback: list[str]) -> set[str]:
    """The option strings of the argparse parser `call()` builds (caught at its parse_args, so nothing runs); the
    command's `--help` output when no parser is reached that way."""
    parsers = []

    def capture(self, *args, **kwargs):
        parsers.append(self)
        raise _Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            call()
        except _Parsed:
            pass
    if not parsers:
        return usage_flags(fallback)
    return {option for action in parsers[0]._actions for option in action.option_strings}


@pytest.fixture(scope="session")
def run_mtl_flags() -> set[str]:
    """run_mtl.py's options: the three argument dataclasses as HfArgumentParser exposes them (field names, their
    dashed spellings, --no_<field> for the boolean ones that default to true, --help)."""
    from transformers import HfArgumentParser

    from sentmtl.training.arguments import DataArguments, ModelArguments, SentMtlTrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, SentMtlTrainingArguments))
    return {option for action in parser._actions for option in action.option_strings}


@pytest.fixture(scope="session")
def run_embed_flags() -> set[str]:
    from sentmtl.serving import embed_cli

    return parser_flags(lambda: embed_cli.parse_args([]), ["run_embed.py"])


@pytest.fixture(scope="session")
def hub_flags() -> set[str]:
    from sentmtl.serving import hub

    return parser_flags(
        lambda: hub.main(["output/sentmtl", "--hub_model_id", "user/name"]), ["-m", "sentmtl.serving.hub"]
    )


@pytest.fixture(scope="session")
def benchmark_flags() -> set[str]:
    flags = set()
    for script in sorted((REPO_ROOT / "benchmarks").glob("*.py")):
        flags |= usage_flags([str(script.relative_to(REPO_ROOT))])
    return flags


def test_every_command_has_options(run_mtl_flags, run_embed_flags, hub_flags, benchmark_flags):
    """The collectors themselves: a broken one would make every flag look foreign."""
    assert {"--output_dir", "--freeze", "--bf16", "--task_sampling"} <= run_mtl_flags
    assert {"--model_name_or_path", "--input_file", "--precision", "--export_sentence_transformer"} <= run_embed_flags
    assert "--hub_model_id" in hub_flags
    assert {"--seeds", "--scenarios", "--stsb_dir"} <= benchmark_flags


@pytest.mark.parametrize("path", DOC_FILES)
def test_every_flag_exists(path, run_mtl_flags, run_embed_flags, hub_flags, benchmark_flags):
    unknown = []
    for chunk in chunks(path):
        for flag in sorted(set(FLAG.findall(chunk.text))):
            if flag in run_mtl_flags or flag in run_embed_flags:
                continue
            if flag in hub_flags and "sentmtl.serving.hub" in chunk.text:
                continue
            if flag in benchmark_flags and "benchmarks/" in chunk.text:
                continue
            if flag in FOREIGN_FLAGS and FOREIGN_FLAGS[flag] in chunk.text:
                continue
            unknown.append(f"{path}:{chunk.line}: {flag}")
    assert not unknown, "flags no command accepts (or named away from their command):\n" + "\n".join(unknown)


# -- YAML examples ----------------------------------------------------------------------------------------------------


def from_task_modules(name: str):
    """`name` from the first of TASK_MODULES that defines it, or None."""
    import importlib

    for module_name in TASK_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    return None


def data_keys() -> set[str]:
    """The code's `DATA_KEYS` (a collection of keys, or {kind: its keys}), else the fallback list."""
    keys = from_task_modules("DATA_KEYS")
    if keys is None:
        return FALLBACK_DATA_KEYS
    if isinstance(keys, dict):
        return set(keys) | {key for group in keys.values() for key in group}
    return set(keys)


def yaml_key_errors(values, where: str) -> list[str]:
    from sentmtl.model.task_spec import TaskSpec
    from sentmtl.training.arguments import DataArguments, ModelArguments, SentMtlTrainingArguments

    DataSpec = from_task_modules("DataSpec")
    assert DataSpec is not None, f"no DataSpec in {TASK_MODULES}"
    allowed_data_keys = data_keys()
    run_keys = {
        field.name
        for cls in (ModelArguments, DataArguments, SentMtlTrainingArguments)
        for field in dataclasses.fields(cls)
        if field.init or field.name == "tasks"
    }
    from sentmtl.tasks.io import TASK_IO

    task_keys = {field.name for cls in (TaskSpec, DataSpec) for field in dataclasses.fields(cls)}
    task_keys |= {"head_learning_rate"}
    if not isinstance(values, dict):
        return [f"{where}: a run file is a mapping, got {type(values).__name__}"]
    errors = [f"{where}: {key!r} is not a run argument" for key in values if key not in run_keys]
    for i, task in enumerate(values.get("tasks") or []):
        if not isinstance(task, dict):
            errors.append(f"{where}: tasks[{i}] is not a mapping")
            continue
        own = TASK_IO[task["type"]].options if task.get("type") in TASK_IO else {}  # the type's data options
        errors += [f"{where}: tasks[{i}].{key} is not a task field" for key in task if key not in task_keys | set(own)]
        if isinstance(task.get("data"), dict):
            errors += [
                f"{where}: tasks[{i}].data.{key} is not a data key"
                for key in task["data"]
                if key not in allowed_data_keys
            ]
    return errors


@pytest.mark.parametrize("path,chunk", code_blocks("yaml"))
def test_yaml_keys_exist(path, chunk):
    values = yaml.safe_load(chunk.text)
    assert not (errors := yaml_key_errors(values, f"{path}:{chunk.line}")), "\n".join(errors)
    # `# configs/<name>.yaml (abridged)`: the block shows some of that file's keys, with the file's values.
    named = re.match(r"#\s*(configs/[\w.-]+\.ya?ml)\b", chunk.text.lstrip())
    if named:
        config = yaml.safe_load((REPO_ROOT / named.group(1)).read_text())
        differ = {
            key: (value, config.get(key, "<missing>")) for key, value in values.items() if config.get(key, ...) != value
        }
        assert not differ, f"{path}:{chunk.line} disagrees with {named.group(1)} (doc, file): {differ}"


def test_the_yaml_check_catches_drift():
    values = {"epochs": 3, "tasks": [{"name": "a", "type": "score", "weight": 2, "data": {"file": "x.csv"}}]}
    assert len(yaml_key_errors(values, "x")) == 3


# -- Python snippets --------------------------------------------------------------------------------------------------


@pytest.fixture
def snippet_dir(tmp_path, tiny_model, tiny_tokenizer, monkeypatch):
    """A working directory whose output/sentmtl is a (tiny, random) trained-model folder, as `make run` leaves."""
    work = tmp_path / "work"
    tiny_model.save_pretrained(work / "output" / "sentmtl")
    tiny_tokenizer.save_pretrained(work / "output" / "sentmtl")
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("path,chunk", code_blocks("python"))
def test_python_snippet_runs(path, chunk, snippet_dir, request):
    # Data under ../shared (never in the repository): linked beside the working directory, or the test skips.
    for name in sorted(set(re.findall(r"\.\./shared/data/([\w.-]+)", chunk.text))):
        if name == "sentiment_labelled_sentences":
            source = request.getfixturevalue("data_dir")  # conftest: skips without the corpus (fails in CI)
        else:
            source = REPO_ROOT.parent / "shared" / "data" / name
            if not source.exists():
                pytest.skip(f"{source} not found")
        link = snippet_dir.parent / "shared" / "data" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source, link)
    if "onnx_runtime" in chunk.text:  # the ONNX snippets read the folder's onnx/, as run_mtl.py --export_onnx leaves it
        pytest.importorskip("onnxruntime")
        from sentmtl.serving.onnx_export import export_onnx

        model, tokenizer = request.getfixturevalue("tiny_model"), request.getfixturevalue("tiny_tokenizer")
        export_onnx(model, tokenizer, snippet_dir / "output" / "sentmtl" / "onnx")
    exec(compile(chunk.text, f"{path}:{chunk.line}", "exec"), {"__name__": "__doc_snippet__"})


def test_readme_snippets_run_on_a_trained_folder():
    """The README's Python must stay runnable here: it loads from output/sentmtl, which the test provides."""
    readme = [chunk for chunk in chunks("README.md") if chunk.lang == "python"]
    assert readme and all('"output/sentmtl"' in chunk.text for chunk in readme)


# -- set-up commands and links ----------------------------------------------------------------------------------------


def test_readme_setup_commands_are_the_makefiles():
    targets = set(re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), flags=re.M))
    commands = {
        line.split("#")[0].strip()
        for chunk in chunks("README.md")
        if chunk.lang == "bash"
        for line in chunk.text.splitlines()
        if line.startswith("make ")
    }
    assert {"make run", "make test"} <= commands
    assert {command.split()[1] for command in commands} <= targets


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", DOC_FILES)
def test_links_resolve(path):
    text_chunks = [chunk.text for chunk in chunks(path) if chunk.lang is None]
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", "\n".join(text_chunks)):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        resolved = (REPO_ROOT / path).parent / file if file else REPO_ROOT / path
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            headings = [chunk for chunk in chunks(str(resolved.resolve().relative_to(REPO_ROOT))) if chunk.lang is None]
            slugs = {
                slug(line.lstrip("#")) for chunk in headings for line in chunk.text.splitlines() if line.startswith("#")
            }
            if anchor not in slugs:
                broken.append(target)
    assert not broken, f"{path}: broken links {broken}"
