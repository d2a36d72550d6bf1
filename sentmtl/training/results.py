"""What a run leaves and returns: the final save (model, card, run_config.yaml, an ONNX export), the reports and the
printed metrics table, the Hub push, and `RunResult`."""

from dataclasses import dataclass, field
from pathlib import Path

from ..serving.hub import push_folder
from ..serving.onnx_export import ONNX_FOLDER, export_onnx
from .checkpoints import save_final_model
from .model_card import build_model_card
from .report import format_metrics_table, write_reports
from .run_config import resolved_run_config, run_config_yaml


@dataclass
class RunResult:
    """What a run measured and left: `run()`'s return value, so callers need not re-read the files."""

    metrics: dict
    train_metrics: dict | None
    log_history: list
    output_dir: Path
    files: list[str] = field(default_factory=list)
    # {task: reliability_bins(...)} of the final evaluation, for tasks with a reliability diagram.
    reliability: dict = field(default_factory=dict)

    def __getitem__(self, key):  # `run(...)["eval_classification_accuracy"]` reads a metric, as the dict it replaces
        return self.metrics[key]


def finish_run(trainer, model, tokenizer, data, arguments, metrics, outputs, train_metrics, hub) -> RunResult:
    """Save the trained model with its card (atomically; with `--merge_lora`, its LoRA adapters folded into the
    encoder, else an adapter folder), then — on the main process — the ONNX export (of the merged model) and
    run_config.yaml, the reports and the metrics table, and the Hub push. `arguments`: (model, data, training)
    arguments; `hub`: the push settings `run` took out of the training arguments (None: no push)."""
    model_args, data_args, training_args = arguments
    output_dir = Path(training_args.output_dir)
    run_config = resolved_run_config(model_args, data_args, training_args)
    if data_args.tasks is not None:
        run_config["tasks"] = [task.to_dict() for task in data_args.tasks]
    repo_id = training_args.hub_model_id if hub else None
    card = build_model_card(model.config, metrics, run_config, train_metrics, repo_id=repo_id)
    if model_args.merge_lora:
        model.merge_lora()  # the saved folder is a plain sentmtl model; the card (above) tells of the adapters
    save_final_model(trainer, output_dir, extra_files={"README.md": card})
    main_process = trainer.is_world_process_zero()
    if main_process:
        if training_args.export_onnx:
            export_onnx(model, tokenizer, output_dir / ONNX_FOLDER)
        (output_dir / "run_config.yaml").write_text(run_config_yaml(run_config, training_args))
    reliability = write_reports(output_dir, trainer.state.log_history, model.tasks, outputs, draw=main_process)
    if main_process:
        held_out = ", ".join(f"{s.eval.num_rows} for {'/'.join(t.name for t in s.tasks)}" for s in data.evaluated)
        print(f"\nResults on the held-out rows ({held_out}; {output_dir / 'eval_results.json'}):")
        print(format_metrics_table(metrics, [*model.tasks, *data.eval_tasks]))
        print(f"Model, tokenizer, model card (README.md) and reports saved in {output_dir}")
        if hub:
            print(f"Pushed to {push_folder(output_dir, training_args.hub_model_id, **hub)}")
    files = sorted(p.name for p in output_dir.iterdir() if p.is_file()) if output_dir.is_dir() else []
    return RunResult(metrics, train_metrics, trainer.state.log_history, output_dir, files, reliability)


__all__ = ["RunResult", "finish_run"]
