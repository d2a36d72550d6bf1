"""Upload a saved run folder to the Hugging Face Hub: `python -m sentmtl.serving.hub OUTPUT_DIR --hub_model_id user/name`.

`run_mtl.py --push_to_hub` calls this after the model, metrics and card are saved locally, so a failed push
(offline, no token, no permission) loses nothing: the same command pushes the folder later.
"""

import argparse
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..model.lora import ADAPTER_FOLDER
from ..utils.network import offline_flag, unreachable
from .onnx_export import ONNX_FOLDER

# What a model repository needs. Checkpoints and the Trainer's pickled arguments stay local.
_NEVER_UPLOADED = ("training_args.bin",)


class HubPushError(RuntimeError):
    """The push failed; the local folder is complete and can be pushed again."""


def files_to_upload(output_dir) -> list[str]:
    """The files of a run folder that belong in the model repository (paths relative to it, sorted).

    The top-level files (model, config, code files, tokenizer, README.md (the card), metrics, plots, run_config.yaml),
    the ONNX export in `onnx/` when there is one (`--export_onnx`) and a LoRA adapter folder's `adapter/` (the adapter
    in peft's format). Not the `checkpoint-*` folders (optimizer state, for resuming) or training_args.bin.
    """
    output_dir = Path(output_dir)
    files = [p for p in output_dir.iterdir() if p.is_file()]
    for folder in (ONNX_FOLDER, ADAPTER_FOLDER):
        if (output_dir / folder).is_dir():
            files += [p for p in (output_dir / folder).iterdir() if p.is_file()]
    return sorted(
        p.relative_to(output_dir).as_posix()
        for p in files
        if p.name not in _NEVER_UPLOADED and not p.name.startswith(".")
    )


def check_hub_reachable(timeout: float = 5.0) -> None:
    """Fail in seconds with a clear message when offline, instead of after the Hub client's retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or offline_flag("HF_HUB_OFFLINE"):
        raise HubPushError("HF_HUB_OFFLINE is set, so nothing can be uploaded.")
    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    reason = unreachable(host, port, timeout)
    if reason:
        raise HubPushError(f"cannot reach {host}:{port} ({reason}).")


def push_folder(
    output_dir,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload sentmtl model",
    revision: str | None = None,
) -> str:
    """Create `repo_id` (and the branch `revision`, when given) if needed and upload `files_to_upload(output_dir)`
    there; returns the repository URL.

    `token=None` lets huggingface_hub find one (`HF_TOKEN`, `hf auth login`). Any failure is a `HubPushError`
    whose message says the local folder is intact and how to retry; the token never appears in it.
    """
    output_dir = Path(output_dir)
    retry = (
        f"The trained model is saved in {output_dir}; push it later with: python -m sentmtl.serving.hub {output_dir} "
        f"--hub_model_id {repo_id}" + (f" --revision {revision}" if revision else "")
    )
    if not (output_dir / "config.json").is_file():
        raise HubPushError(f"{output_dir} holds no saved model (no config.json); nothing to push.")
    files = files_to_upload(output_dir)
    try:
        check_hub_reachable()
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=output_dir,
            allow_patterns=files,
            commit_message=commit_message,
            revision=revision,
        )
    except HubPushError as err:
        raise HubPushError(f"Pushing to {repo_id} failed: {err} {retry}") from None
    except Exception as err:  # network, auth, permission: all leave the local folder as it is
        message = str(err).replace(token, "<token>") if token else str(err)
        raise HubPushError(f"Pushing to {repo_id} failed: {type(err).__name__}: {message} {retry}") from None
    return str(url)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="A folder written by run_mtl.py.")
    parser.add_argument("--hub_model_id", required=True, help="The repository: user/name or org/name.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Push to this branch (created if missing). Default: main.")
    args = parser.parse_args(argv)
    try:
        url = push_folder(args.output_dir, args.hub_model_id, private=args.private or None, revision=args.revision)
    except HubPushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Pushed {args.output_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
