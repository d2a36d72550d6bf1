"""`encode(..., compile=True)`: the model's embedding forwards (`embed`, `pool`) compiled by torch.compile, once per
model, and kept on it so that later calls reuse them (`compiled_forward`)."""

import weakref

import torch

ATTRIBUTE = "_sentmtl_compiled_forwards"


class CompiledForwards:
    """One model's compiled forwards by name. Compiled with dynamic shapes: `encode` pads each batch to its own longest
    sentence, so the lengths vary from batch to batch (and the last batch is shorter), and one graph serves them all.

    A copy of the model (`copy.deepcopy`, a pickle) does not take them: they are the original's methods, bound to its
    weights. A shallow copy that shares them is caught by the owner check in `compiled_forward`."""

    def __init__(self, model):
        self.owner = weakref.ref(model)
        self.forwards = {}

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return type(None), ()


def compiled_forward(model, name: str):
    """`getattr(model, name)` compiled, made on the first call and kept on the model (compiling takes seconds to
    minutes; a kept one is reused by every later call)."""
    cache = model.__dict__.get(ATTRIBUTE)
    if cache is None or cache.owner() is not model:
        cache = CompiledForwards(model)
        model.__dict__[ATTRIBUTE] = cache  # not an nn.Module attribute: no parameters, no state_dict entry
    if name not in cache.forwards:
        cache.forwards[name] = torch.compile(getattr(model, name), dynamic=True)
    return cache.forwards[name]
