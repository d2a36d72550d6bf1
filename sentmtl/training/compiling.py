"""`--torch_compile` (the Trainer's own flag; accelerate compiles the model when it prepares it): the shapes it
compiles for (`with_dynamic_shapes`), the gradients it gives to heads a step did not train (`drop_untrained_head_gradients`)
and the combination it refuses (`check_compile`)."""

# Length-grouped batches have a length of their own each (23 lengths in 52 batches of a small varied table), and a last
# batch of an epoch is shorter. Left to torch's automatic dynamic shapes, the first batch compiles a graph for its own
# shape, the second length a dynamic one, the first short batch a third (measured: 3 graphs in 2 epochs); dynamic from
# the start, one graph serves them all (measured: 1).


def with_dynamic_shapes(accelerator_args: dict) -> dict:
    """The Trainer's accelerator arguments, its compilation made dynamic in every dimension unless the Trainer chose
    otherwise (it makes Neuron's static)."""
    plugin = accelerator_args.get("dynamo_plugin")
    if plugin is not None and plugin.dynamic is None:
        plugin.dynamic = True
    return accelerator_args


def drop_untrained_head_gradients(model, trained_tasks: set[str]) -> None:
    """After a step's last backward pass: no gradient for the heads of the tasks none of its batches had targets for.
    Eager, such a head is not in the loss's graph and keeps no gradient, so AdamW leaves it alone (no moment update, no
    weight decay); the compiled backward gives it zeros, and AdamW would move it on its moments (measured: a
    classification head 1.3e-4 away from eager's after one contrastive batch of a two-source run). Under DDP every
    process trains the same source at a step, so all drop the same heads."""
    for task in model.tasks:
        if task.has_head and task.name not in trained_tasks:
            for parameter in getattr(model, f"{task.name}_head").parameters():
                parameter.grad = None


def compiles(args) -> bool:
    """Whether the Trainer will compile the model (a backend or a mode alone asks for it too)."""
    return bool(args.torch_compile or args.torch_compile_backend or args.torch_compile_mode)


def check_compile(args, model=None) -> None:
    """Activation (gradient) checkpointing (`--activation_checkpointing`, or its older name `--gradient_checkpointing`) under `--torch_compile` is refused, from the flag or from a `model` that has
    it on: compiled, the checkpointed layers gave gradients up to 3e-4 away from the eager ones at the first step
    (the tiny test encoder, backend aot_eager, where every other combination matched eager exactly), and a model
    compiled later in the same process reused that graph."""
    if not compiles(args):
        return
    flags = [
        f"--{name}" for name in ("activation_checkpointing", "gradient_checkpointing") if getattr(args, name, False)
    ]
    on_model = model is not None and (
        getattr(model, "is_activation_checkpointing", False) or getattr(model, "is_gradient_checkpointing", False)
    )
    if flags or on_model:
        where = flags[0] if flags else "the model's activation checkpointing (it is enabled on it)"
        raise ValueError(
            f"--torch_compile with {where}: the compiled checkpointed layers give gradients that differ from "
            "the eager ones; drop one of them (or model.activation_checkpointing_disable())."
        )
