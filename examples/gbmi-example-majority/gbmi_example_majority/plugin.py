"""Majority of n bits: a tiny task with one model, one trainer and one proof strategy.

It uses only the public API of ``gbmi_core`` and imports torch only inside the functions that need it, so
``gbmi list-strategies`` stays fast.
"""

from __future__ import annotations

import itertools

import attrs

from gbmi_core import Bound, FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainedModel, TrainerSpec, hookimpl

TASK = "majority"


@attrs.frozen
class MajorityConfig:
    n_bits: int = attrs.field(default=3, validator=attrs.validators.in_([1, 3, 5, 7]))
    seed: int = 0
    steps: int = 200


def all_inputs(n_bits: int):
    import torch

    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n_bits)))


def label(inputs):
    return (inputs.sum(-1) * 2 > inputs.shape[-1]).long()


def build_model(config: MajorityConfig):
    import torch

    torch.manual_seed(config.seed)
    return torch.nn.Linear(config.n_bits, 2)


def train(config: MajorityConfig, progress: bool = True) -> TrainedModel:
    import torch

    model = build_model(config)
    inputs = all_inputs(config.n_bits)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(config.steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), label(inputs))
        loss.backward()
        optimiser.step()
    loss = loss.detach()
    return TrainedModel(model, {"final_loss": loss.item()})


def check_model(model) -> None:
    import torch

    from gbmi_core import ModelRefused

    if not isinstance(model, torch.nn.Linear) or model.out_features != 2:
        raise ModelRefused("the majority task needs a torch.nn.Linear with 2 outputs")


def verify_enumerate(model, certificate) -> Bound:
    """Run the model on all 2^n inputs; an input counts when the right logit is strictly the largest.

    Certified: the logits are outward-rounded intervals (``gbmi_core.certified``) around their exact values,
    and an input counts only when its margin is certainly positive.
    """
    import torch

    from gbmi_core.certified import Interval, matmul

    inputs = all_inputs(model.in_features)
    logits = matmul(Interval.exact(inputs), model.weight.detach().T) + model.bias.detach()  # [2^n, 2]
    right = label(inputs)
    rows = torch.arange(len(right))
    margin = logits[rows, right] - logits[rows, 1 - right]
    return Bound(correct_count=int(margin.certainly_positive().sum()), total_count=len(right), certified=True)


@hookimpl
def gbmi_tasks():
    return [TaskSpec(name=TASK, summary="Predict whether most of n bits are 1.", config_type=MajorityConfig,
                     build_model=build_model, input_space="{0,1}^n_bits", label=label, check_model=check_model,
                     presets={"five-bits": {"n_bits": 5}})]


@hookimpl
def gbmi_models():
    return [ModelSpec(task=TASK, name="linear", summary="One linear layer from n bits to 2 logits.",
                      build=build_model)]


@hookimpl
def gbmi_training():
    return [TrainerSpec(task=TASK, name="adam", summary="Full-batch Adam on all inputs.", train=train)]


@hookimpl
def gbmi_proof_strategies():
    return [StrategySpec(task=TASK, name="enumerate", summary="Run the model on every input.",
                         complexity="O(2^n n)", verify=verify_enumerate,
                         unexplained_dimension=lambda model: 2 ** model.in_features)]


def draw_weights(model, strategy=None):
    """The mechanism, in one picture: each output's weight on each input bit (and its bias)."""
    import matplotlib.figure

    weights = model.weight.detach().numpy()
    figure = matplotlib.figure.Figure(figsize=(4.5, 3))
    axes = figure.subplots()
    image = axes.imshow(weights, cmap="RdBu", vmin=-abs(weights).max(), vmax=abs(weights).max())
    axes.set_xlabel("input bit")
    axes.set_ylabel("output (0: minority, 1: majority)")
    axes.set_title("weights; biases " + ", ".join(f"{b:.2f}" for b in model.bias.detach().tolist()))
    figure.colorbar(image, ax=axes)
    return figure


@hookimpl
def gbmi_figures():
    return [FigureSpec(task=TASK, name="weights", summary="Each output's weight on each input bit.",
                       draw=draw_weights)]
