"""The ways to compute per-sample gradients, in one registry.

A method is a factory ``method(model, loss_fn) -> compute`` where
``compute(inputs, targets)`` returns ``{name: Tensor[B, *param.shape]}`` for
every trainable parameter, in ``model.named_parameters()`` order. One-time
work (building transforms, compiling) belongs in the factory, so a benchmark
can keep it out of the per-call time. Adding a method is one factory and one
``METHODS`` entry; both benchmark suites pick it up from there.

A method that cannot run here raises ``MethodUnavailable`` with the reason,
and the suites skip it rather than fail. It declines in one of three ways
(docs/support-matrix.md lists what each method declines on which layer):
before computing, where an optional package is missing or the model has a
layer the method's own documentation excludes; when it fails on a model the
loop computes (the error is turned into one line naming the layer); and, for
the hook methods, when the guard (``guard``) finds its per-sample gradients do
not add up to the batch gradient.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import time
import traceback
import warnings

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from persample_core.guard import mismatch, replayed, rng_state
from persample_core.validate import check_batch, check_choice, check_model, checked_loss


class MethodUnavailable(RuntimeError):
    """This method cannot compute this model's per-sample gradients here; the message says why."""


def split_state(model):
    """Detached (trainable parameters, everything else) as two dicts for ``functional_call``."""
    trainable, fixed = {}, {}
    for name, p in model.named_parameters():
        (trainable if p.requires_grad else fixed)[name] = p.detach()
    fixed.update((name, b.detach()) for name, b in model.named_buffers())
    return trainable, fixed


def _trainable_parameters(model):
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _gradients(loss, params) -> list[torch.Tensor]:
    """``torch.autograd.grad(loss, params)``, with zeros for a parameter the loss does not use."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def loop(model, loss_fn):
    """One forward and backward per sample, as in the tutorial: the baseline."""

    def compute(inputs, targets):
        names, params = zip(*_trainable_parameters(model))
        per_sample = [
            _gradients(loss_fn(model(inputs[i : i + 1]), targets[i : i + 1]), params) for i in range(len(inputs))
        ]
        return {name: torch.stack(grads) for name, grads in zip(names, zip(*per_sample))}

    return compute


def _vmapped_sample_grad(model, loss_fn, chunk_size=None):
    """``vmap(grad(loss of one sample))`` over ``(params, fixed, inputs, targets)``, as in the tutorial.

    ``randomness="different"`` gives each sample its own dropout mask, which is
    what a per-sample gradient means for a model with dropout. ``chunk_size``
    samples are vmapped at a time (None: all at once).
    """

    def sample_loss(params, fixed, x, y):
        return loss_fn(functional_call(model, (params, fixed), (x.unsqueeze(0),)), y.unsqueeze(0))

    return vmap(grad(sample_loss), in_dims=(None, None, 0, 0), randomness="different", chunk_size=chunk_size)


def _on_current_state(model, per_sample):
    """``compute`` that applies ``per_sample`` to the model's parameters as they are at each call."""

    def compute(inputs, targets):
        params, fixed = split_state(model)
        return per_sample(params, fixed, inputs, targets)

    return compute


def vmap_grad(model, loss_fn, *, chunk_size: int | None = None):
    """``torch.func``: ``vmap(grad(loss of one sample))`` over the batch, ``chunk_size`` samples at a time."""
    return _on_current_state(model, _vmapped_sample_grad(model, loss_fn, chunk_size))


# vmap keeps every intermediate of the whole batch alive at once; in chunks it
# keeps ``chunk_size`` samples' worth, at the price of one pass per chunk. 16
# bounds that memory at any batch size while each pass still multiplies 16-row
# matrices; at batch sizes up to 16 it is plain vmap. The B x P gradients it
# returns are not chunked: they are the output.
DEFAULT_CHUNK_SIZE = 16
CHUNK_SIZE_VARIABLE = "PERSAMPLE_CHUNK_SIZE"


def chunk_size_setting() -> int:
    """The chunk size of ``vmap_chunked``: ``$PERSAMPLE_CHUNK_SIZE``, else ``DEFAULT_CHUNK_SIZE``."""
    value = os.environ.get(CHUNK_SIZE_VARIABLE, str(DEFAULT_CHUNK_SIZE))
    if not value.isdecimal() or int(value) < 1:
        raise ValueError(
            f"{CHUNK_SIZE_VARIABLE} must be a positive integer, got {value!r}; unset it for {DEFAULT_CHUNK_SIZE}"
        )
    return int(value)


def vmap_chunked(model, loss_fn):
    """``vmap_grad`` in chunks of ``chunk_size_setting()`` samples: less memory, more passes."""
    return vmap_grad(model, loss_fn, chunk_size=chunk_size_setting())


# Every compiled vmap shares one dynamo cache (that of vmap's wrapper code), and
# each model and batch size adds an entry to it. At dynamo's default limit of 8
# entries it silently falls back to eager, and a sweep would time eager code
# under this method's name, so the limits are raised for the process.
RECOMPILE_LIMIT = 1 << 16


def compile_seconds(compute) -> float | None:
    """Seconds ``compute`` (from ``prepare`` or a factory) has spent compiling; None if it never compiles."""
    return getattr(inspect.unwrap(compute), "compile_seconds", None)


def vmap_compiled(model, loss_fn):
    """``torch.compile`` of the ``vmap_grad`` function, with static shapes.

    Compilation happens in the first call at each new batch size (a new
    shape recompiles: ``dynamic=False`` gives kernels specialised to B, which
    is what a benchmark at fixed B should time). The wall time of the calls
    that compiled, a single run of the compiled code included, is added up in
    ``compute.compile_seconds``, so warm-up absorbs it and it can be reported
    on its own.
    """
    import torch._dynamo  # imported here: it takes a second, and only this method needs it

    for limit in ("recompile_limit", "accumulated_recompile_limit"):
        if not hasattr(torch._dynamo.config, limit):  # older torch named them cache_size_limit
            raise MethodUnavailable(f"torch {torch.__version__} has no torch._dynamo.config.{limit}; upgrade torch")
        setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), RECOMPILE_LIMIT))
    compiled = _on_current_state(model, torch.compile(_vmapped_sample_grad(model, loss_fn), dynamic=False))
    counters = torch._dynamo.utils.counters  # looked up per call: torch._dynamo.reset() clears it

    def compute(inputs, targets):
        compiled_before, start = counters["stats"]["unique_graphs"], time.perf_counter()
        try:
            result = compiled(inputs, targets)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            reason = " ".join(f"{type(err.inner_exception).__name__}: {err.inner_exception}".split())
            raise MethodUnavailable(f"torch.compile cannot compile here ({err.backend_name}): {reason}") from None
        if counters["stats"]["unique_graphs"] > compiled_before:
            compute.compile_seconds += time.perf_counter() - start
        return result

    compute.compile_seconds = 0.0
    return compute


def _trainable_layers(model):
    """(name, module) for every module that itself holds a trainable parameter."""
    return [(name, m) for name, m in model.named_modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


def _summed_sample_losses(loss_fn):
    """``sum_i loss_fn(out_i[None], y_i[None])``: the batch loss whose gradient hooks split by sample.

    Hook methods take one backward of a batch loss and scale it by a known
    reduction ("sum" or "mean"). Rather than guess how an opaque ``loss_fn``
    reduces, the batch loss is built from the one-sample losses that define a
    per-sample gradient, in one vmapped call, and reduced by a sum.
    """
    per_sample = vmap(lambda out, y: loss_fn(out.unsqueeze(0), y.unsqueeze(0)))
    return lambda outputs, targets: per_sample(outputs, targets).sum()


def _grad_samples(named, batch_size, field: str = "grad_sample"):
    """The per-sample gradients hooks left on each parameter (in ``.grad_sample``, or ``field``); zeros where none did
    (a parameter the loss does not use, or one no hook saw: then the guard finds its batch gradient is not zero)."""
    grads = {n: getattr(p, field, None) for n, p in named}
    return {n: p.new_zeros((batch_size, *p.shape)) if grads[n] is None else grads[n] for n, p in named}


@contextlib.contextmanager
def _grad_sample_attributes(named, field: str = "grad_sample"):
    """Set aside the ``.grad_sample`` (or ``field``) the parameters may already have, drop the new ones, restore the
    old."""
    saved = {name: p.__dict__.pop(field) for name, p in named if field in p.__dict__}
    try:
        yield
    finally:
        for name, p in named:
            p.__dict__.pop(field, None)
            if name in saved:
                setattr(p, field, saved[name])


# The layers whose functional forms ExpandedWeights implements.
EXPANDED_WEIGHTS_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Embedding,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def expanded_weights(model, loss_fn):
    """``torch.nn.utils._per_sample_grad.call_for_per_sample_grads``: one batched
    forward and backward, with per-layer per-sample gradient rules."""
    from torch.nn.utils._per_sample_grad import call_for_per_sample_grads

    for name, layer in _trainable_layers(model):
        if not isinstance(layer, EXPANDED_WEIGHTS_LAYERS):
            raise MethodUnavailable(
                f"expanded_weights does not support {type(layer).__name__} ({name or 'the model itself'}); it handles "
                + ", ".join(cls.__name__.lstrip("_") for cls in EXPANDED_WEIGHTS_LAYERS)
            )
    named = _trainable_parameters(model)
    batch_loss = _summed_sample_losses(loss_fn)

    def compute(inputs, targets):
        with _grad_sample_attributes(named):
            # The per-sample rules return no gradient for the weights themselves: .grad stays as it was.
            batch_loss(call_for_per_sample_grads(model, loss_reduction="sum")(inputs), targets).backward()
            return _grad_samples(named, len(inputs))

    return compute


def opacus_unsupported(model) -> str | None:
    """Why Opacus's hooks cannot compute this model's per-sample gradients as it is, in one line; None where they
    can (opacus installed)."""
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    errors = GradSampleModule.validate(model, strict=False)
    if errors:
        return f"opacus: {' '.join(str(errors[0]).split())}"
    for name, layer in _trainable_layers(model):
        if not layer.training:
            return f"opacus records activations in training mode only, and {name} is in eval mode"
        # Opacus's own list of the layers it needs replaced (LSTM, GRU, MultiheadAttention); the first
        # sentence of its message says why.
        errors = ModuleValidator.VALIDATORS.get(type(layer), lambda _: [])(layer)
        if errors:
            return (
                f"opacus does not support {type(layer).__name__} ({name}) as it is: {str(errors[0]).split('. ')[0]}; "
                "opacus.validators.ModuleValidator.fix(model) replaces it"
            )
    return None


def opacus(model, loss_fn):
    """Opacus's ``GradSampleModule``: forward and backward hooks with per-layer rules (functorch for the rest).

    The hooks go on the caller's model for the duration of a call only: left
    on, they would change every later forward and backward of that model. So
    adding and removing them is part of every call's time, which a DP training
    loop that keeps them on does not pay (docs/studies/2026-11-28-method-costs.md).
    """
    try:
        from opacus import GradSampleModule
    except ImportError:
        raise MethodUnavailable("opacus is not installed; pip install 'persample-core[opacus]'") from None
    if reason := opacus_unsupported(model):
        raise MethodUnavailable(reason)
    named = _trainable_parameters(model)
    params = [p for _, p in named]
    batch_loss = _summed_sample_losses(loss_fn)

    def compute(inputs, targets):
        with opacus_hooks(model, named) as wrapped:
            wrapped.append(hooked := GradSampleModule(model, batch_first=True, loss_reduction="sum"))
            _gradients(batch_loss(hooked(inputs), targets), params)
            return _grad_samples(named, len(inputs))

    return compute


OPACUS_LEFTOVERS = ("activations", "max_batch_len", "_forward_counter", "_norm_sample", "grad_sample")


@contextlib.contextmanager
def opacus_hooks(model, named):
    """Inside, the caller wraps ``model`` in an Opacus module and appends it to the list yielded; on the way out,
    however it ends, each is cleaned up (its hooks taken off), what Opacus leaves on the layers and parameters is
    removed (``OPACUS_LEFTOVERS``: a failed call leaves its activations, and the next call would fail on them), the
    hooks the model had are as they were (a constructor that failed midway leaves some on), and the
    ``.grad_sample`` the parameters had before is put back."""
    before = {id(m): set(vars(m)) for m in model.modules()} | {id(p): set(vars(p)) for _, p in named}
    hooks = {m: (dict(m._forward_hooks), dict(m._backward_hooks), m._is_full_backward_hook) for m in model.modules()}
    wrapped = []
    with _grad_sample_attributes(named), warnings.catch_warnings():
        # The first layer's inputs need no gradient, which torch warns about and Opacus expects.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        try:
            yield wrapped
        finally:
            for module in wrapped:
                module.cleanup()
            for thing in [*model.modules(), *(p for _, p in named)]:
                for name in set(vars(thing)) - before.get(id(thing), set()):
                    if name in OPACUS_LEFTOVERS:
                        delattr(thing, name)
            for m, (forward, backward, full) in hooks.items():
                m._forward_hooks.clear(), m._forward_hooks.update(forward)
                m._backward_hooks.clear(), m._backward_hooks.update(backward)
                m._is_full_backward_hook = full


# The layers BackPACK's BatchGrad has a rule for (backpack/extensions/firstorder/batch_grad/__init__.py), matched
# by exact type as BackPACK matches them. BatchNorm in training couples the samples, and check_model refuses it.
BACKPACK_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
    nn.RNN,
    nn.LSTM,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
)
BACKPACK_LEFTOVERS = re.compile(r"input\d+|output|_backpack_extend")  # what extend and its hooks set on a layer


def backpack(model, loss_fn):
    """BackPACK's ``BatchGrad`` (Dangel et al. 2020): hooks on each layer compute its samples' gradients from its
    inputs and backpropagated gradients, in one batched backward. As Opacus's, its hooks (``backpack.extend``) are
    on the model for the duration of a call only (``backpack_hooks``)."""
    try:
        from backpack import backpack as extensions_on
        from backpack.extensions import BatchGrad
    except ImportError:
        raise MethodUnavailable(
            "backpack is not installed; pip install backpack-for-pytorch (persample-core[backpack])"
        ) from None
    for name, layer in _trainable_layers(model):
        if type(layer) not in BACKPACK_LAYERS:
            raise MethodUnavailable(
                f"backpack's BatchGrad has no rule for {type(layer).__name__} ({name or 'the model itself'}); it "
                "handles " + ", ".join(cls.__name__ for cls in BACKPACK_LAYERS)
            )
    named = _trainable_parameters(model)
    params = [p for _, p in named]
    batch_loss = _summed_sample_losses(loss_fn)

    def compute(inputs, targets):
        with backpack_hooks(model, named):
            outputs = model(inputs)
            with extensions_on(BatchGrad()):
                _gradients(batch_loss(outputs, targets), params)
            return _grad_samples(named, len(inputs), field="grad_batch")

    return compute


@contextlib.contextmanager
def backpack_hooks(model, named):
    """``backpack.extend(model)`` inside; on the way out, however it ends, the hooks it added taken off (BackPACK
    keeps their handles in one list for every model, ``CTX.hook_handles``), what it and they left on the layers
    removed (``BACKPACK_LEFTOVERS``: a failed call leaves the layers' inputs; a layer's full-backward-hook flag,
    which would refuse the caller's plain backward hooks, as it was), and the ``.grad_batch`` the parameters had
    before put back. A model the caller extended keeps its own hooks."""
    from backpack import extend
    from backpack.context import CTX

    before = {id(m): set(vars(m)) for m in model.modules()}
    full = {m: m._is_full_backward_hook for m in model.modules()}  # set by a full backward hook, kept when removed
    handles = len(CTX.hook_handles)
    with _grad_sample_attributes(named, "grad_batch"), warnings.catch_warnings():
        # As for Opacus: the first layer's inputs need no gradient. BackPACK also warns of each module with no rule
        # that holds parameters, a container of layers too; the layers themselves were checked (BACKPACK_LAYERS).
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Extension saving to grad_batch does not have an extension")
        try:
            extend(model)
            yield
        finally:
            ours, CTX.hook_handles[handles:] = CTX.hook_handles[handles:], []
            for handle in ours:
                handle.remove()
            for module in model.modules():
                for name in set(vars(module)) - before[id(module)]:
                    if BACKPACK_LEFTOVERS.fullmatch(name):
                        delattr(module, name)
                module._is_full_backward_hook = full[module]


METHODS = {
    "loop": loop,
    "vmap": vmap_grad,
    "vmap_chunked": vmap_chunked,
    "vmap_compiled": vmap_compiled,
    "expanded_weights": expanded_weights,
    "opacus": opacus,
    "backpack": backpack,
}

BASELINE = "loop"

# The methods that see a parameter only through the layers they hook, and so
# can miss a use of it: ``prepare`` guards them (``guard``, docs/guard.md).
HOOK_METHODS = ("expanded_weights", "opacus", "backpack")


def is_out_of_memory(err: BaseException) -> bool:
    """True for running out of memory, CUDA's or the CPU allocator's: an error of the batch's size, not of a method
    (the suites skip such a point, ``prepare`` raises it as it is)."""
    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or any(
        words in str(err) for words in ("out of memory", "can't allocate memory")
    )


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from or while handling, the root cause first (torch.compile
    raises its own error ``from None`` while handling the one that failed)."""
    chain = [err]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    return chain[::-1]


def _failure(err: BaseException, model) -> str:
    """One line: where in ``model`` ``err`` was raised, and its root cause's first line.

    The place is the innermost frame that holds one of the model's modules (the
    module's forward, or a method's rule for that layer); the root cause is the
    error that a compiler or a hook wrapped in pages of context.
    """
    modules = {id(m): (name, m) for name, m in model.named_modules()}
    frames = [frame for e in _causes(err) for frame, _ in reversed(list(traceback.walk_tb(e.__traceback__)))]
    where = "on this model"
    for value in (value for frame in frames for value in frame.f_locals.values()):
        if id(value) in modules and modules[id(value)][1] is value:
            name = modules[id(value)][0]
            where = f"in {name} ({type(value).__name__})" if name else f"in {type(value).__name__}.forward"
            break
    root = _causes(err)[0]
    return f"{where}: {type(root).__name__}: {(str(root).strip().splitlines() or [''])[0]}"


def _declining_failures(method, compute, model, loss_fn):
    """``compute``, where an error the loop does not share is the method's: raised as ``MethodUnavailable``.

    An error the loop shares on the first sample is the model's or the data's,
    and is raised as it is; so is running out of memory, which is the batch's.
    """

    def loop_computes(inputs, targets):
        try:
            loop(model, loss_fn)(inputs[:1], targets[:1])
        except Exception:
            return False
        return True

    def run(inputs, targets, *rest):  # rest: a DP step's max_norm (persample_core.dp)
        try:
            return compute(inputs, targets, *rest)
        except MethodUnavailable:
            raise
        except Exception as err:
            if method == BASELINE or is_out_of_memory(err) or not loop_computes(inputs, targets):
                raise
            raise MethodUnavailable(f"{method} fails where the loop does not, {_failure(err, model)}") from err

    run.__wrapped__ = compute  # for compile_seconds
    return run


def _guarded(method, compute, model, batch_loss):
    """``compute``, checked by the guard at its first call at each batch shape (``persample_core.guard``)."""
    names, params = zip(*_trainable_parameters(model))
    guarded_shapes = set()

    def run(inputs, targets):
        shapes = (inputs.shape, targets.shape)
        if shapes in guarded_shapes:
            return compute(inputs, targets)
        state = rng_state(inputs.device)
        grads = compute(inputs, targets)
        with replayed(state, inputs.device):
            batch = dict(zip(names, _gradients(batch_loss(model(inputs), targets), params)))
        problem = mismatch(grads, batch, len(inputs))
        if problem:
            raise MethodUnavailable(f"{method} fails the guard: {problem}")
        guarded_shapes.add(shapes)
        return grads

    run.__wrapped__ = compute  # for compile_seconds
    return run


def prepare(model, loss_fn, *, method: str = "vmap", guard: bool = True):
    """Check the model once and return ``compute(inputs, targets) -> {name: Tensor[B, ...]}``.

    Each call checks its batch (sizes, devices) before computing; an empty batch
    gives correctly shaped empty gradients. The model's parameters, buffers and
    ``.grad`` fields are left as they were.

    With ``guard``, a hook method's first call at each batch shape also runs one
    plain batched backward and declines (``MethodUnavailable``, naming the
    parameter) unless the per-sample gradients add up to its gradient: see
    ``persample_core.guard``. Later calls at that shape run unguarded, so a
    warm-up call guards the calls a benchmark times. Other methods compute
    per-sample gradients by their definition and are not guarded.
    """
    check_choice("method", method, METHODS)
    check_model(model)
    loss_fn = checked_loss(loss_fn)
    compute = _declining_failures(method, METHODS[method](model, loss_fn), model, loss_fn)
    if guard and method in HOOK_METHODS:
        compute = _guarded(method, compute, model, _summed_sample_losses(loss_fn))

    def checked_compute(inputs, targets):
        if check_batch(model, inputs, targets) == 0:
            return {n: p.new_empty((0, *p.shape)) for n, p in model.named_parameters() if p.requires_grad}
        return compute(inputs, targets)

    checked_compute.__wrapped__ = compute  # for compile_seconds
    return checked_compute


def per_sample_grads(
    model, loss_fn, inputs, targets, *, method: str = "vmap", guard: bool = True
) -> dict[str, torch.Tensor]:
    """Gradient of ``loss_fn(model(x_i[None]), y_i[None])`` for every sample ``i``.

    Returns one entry per trainable parameter, keyed as in
    ``model.named_parameters()`` (frozen parameters left out), each of shape
    ``[B, *param.shape]``. ``guard``: see ``prepare``.
    """
    return prepare(model, loss_fn, method=method, guard=guard)(inputs, targets)
