"""The hook specifications: the whole contract between gbmi's core and its plugins.

A plugin is a module (registered through the ``gbmi`` entry-point group) with functions marked by
:data:`gbmi_core.hookimpl`.  Each hook takes no arguments and returns an iterable of typed, frozen records
(:mod:`gbmi_core.records`).  The core calls every implementation, flattens the results, records which
plugin provided each record, sorts them by name, and refuses duplicate names naming both providers.

Plugins should import heavy modules (torch, transformer_lens) *inside* the callables they put in the
records, not at module import: ``gbmi list-strategies`` loads every plugin and must stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .records import FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainerSpec

PROJECT_NAME = "gbmi"

_spec = pluggy.HookspecMarker(PROJECT_NAME)


@_spec
def gbmi_tasks() -> Iterable["TaskSpec"]:
    """Return the tasks this plugin provides.

    Called once when the registry is built.  All plugins' results are combined; a task name may be
    provided by one plugin only.

    **Example** (a complete plugin module)::

        import attrs
        from gbmi_core import TaskSpec, hookimpl

        @attrs.frozen
        class ParityConfig:
            n_bits: int = 3
            seed: int = 0

        def build_model(config):
            import torch
            torch.manual_seed(config.seed)
            return torch.nn.Linear(config.n_bits, 2)

        @hookimpl
        def gbmi_tasks():
            return [TaskSpec(name="parity", summary="Predict the parity of n bits.",
                             config_type=ParityConfig, build_model=build_model,
                             input_space="{0,1}^n_bits")]

    .. versionadded:: 0.1
    """


@_spec
def gbmi_models() -> Iterable["ModelSpec"]:
    """Return the model architectures this plugin provides for a task (any task, by name).

    Called once when the registry is built.  ``(task, name)`` pairs must be unique across plugins.

    **Example**::

        from gbmi_core import ModelSpec, hookimpl

        def build_wide(config):
            import torch
            return torch.nn.Sequential(torch.nn.Linear(config.n_bits, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 2))

        @hookimpl
        def gbmi_models():
            return [ModelSpec(task="parity", name="mlp", summary="A one-hidden-layer MLP.",
                              build=build_wide)]

    .. versionadded:: 0.1
    """


@_spec
def gbmi_training() -> Iterable["TrainerSpec"]:
    """Return how tasks' models are trained.

    ``TrainerSpec.train(config, progress=True)`` must be deterministic for a given ``config.seed`` on
    CPU, and return a :class:`~gbmi_core.records.TrainedModel`.  The core stores the result in the store
    keyed by the config's content hash (:func:`gbmi_core.train_or_load`).  One trainer per task.

    **Example**::

        from gbmi_core import TrainedModel, TrainerSpec, hookimpl

        def train(config, progress=True):
            import torch
            torch.manual_seed(config.seed)
            model = torch.nn.Linear(config.n_bits, 2)
            # ... optimise it here ...
            return TrainedModel(model=model, metrics={"steps": 0})

        @hookimpl
        def gbmi_training():
            return [TrainerSpec(task="parity", name="sgd", summary="Plain SGD.", train=train)]

    .. versionadded:: 0.1
    """


@_spec
def gbmi_proof_strategies() -> Iterable["StrategySpec"]:
    """Return the proof strategies this plugin provides.

    A strategy's name is unique within its task.  A strategy is split into *search* (free; returns the
    contents of a certificate) and *verification* (counted in FLOPs; takes the certificate and returns a
    :class:`~gbmi_core.records.Bound`).  Verification must be sound for any certificate.

    **Example**::

        from gbmi_core import Bound, StrategySpec, hookimpl

        def verify(model, certificate):
            import itertools, torch
            inputs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=model.in_features)))
            logits = model(inputs).detach()
            label = inputs.sum(-1).long() % 2
            right = logits.gather(1, label[:, None])[:, 0] > logits.gather(1, 1 - label[:, None])[:, 0]
            return Bound(correct_count=int(right.sum()), total_count=len(inputs))

        @hookimpl
        def gbmi_proof_strategies():
            return [StrategySpec(task="parity", name="brute-force",
                                 summary="Run the model on every input.",
                                 complexity="O(2^n n)", verify=verify)]

    .. versionadded:: 0.1
    """


@_spec
def gbmi_figures() -> Iterable["FigureSpec"]:
    """Return the figures this plugin draws of a task's model: pictures of the mechanism a proof rests on.

    ``FigureSpec.draw(model, strategy=None)`` returns a matplotlib ``Figure``; figures about a proof
    (``needs_strategy=True``) receive the registry's :class:`~gbmi_core.Strategy` and may call its
    ``search(model)`` for the certificate.  ``gbmi explain TASK --out DIR`` writes them all as files;
    ``registry.explain(task, model)`` returns them, so a notebook shows them inline.  ``(task, name)``
    pairs are unique across plugins.

    **Example**::

        from gbmi_core import FigureSpec, hookimpl

        def draw_weights(model, strategy=None):
            import matplotlib.figure
            figure = matplotlib.figure.Figure(figsize=(4, 3))
            axes = figure.subplots()
            axes.imshow(model.weight.detach().numpy(), cmap="RdBu")
            axes.set_title("weights (output x input bit)")
            return figure

        @hookimpl
        def gbmi_figures():
            return [FigureSpec(task="parity", name="weights", summary="The linear layer's weights.",
                               draw=draw_weights)]

    .. versionadded:: 0.2
    """
