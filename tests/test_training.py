"""gbmi_core.training: the shared training loop is deterministic, learns, and leaves torch as it found it."""

import torch

from gbmi_core.training import train_on_samples


def _task():
    def sample(count, generator):
        return torch.randint(0, 2, (count, 5), generator=generator).float()

    def label(x):
        return (x.sum(-1) > 2).long()

    return sample, label


def _train(decay=0.0):
    sample, label = _task()
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    return train_on_samples(model, sample=sample, label=label, forward=lambda m, x: m(x), seed=3, steps=300,
                            batch_size=64, lr=0.05, weight_decay=0.0, eval_samples=256, decay=decay,
                            progress=False)


def test_deterministic_and_learns_and_restores_threads():
    threads = torch.get_num_threads()
    first, second = _train(), _train()
    assert torch.get_num_threads() == threads
    assert torch.equal(first.model.weight, second.model.weight)
    assert first.metrics["eval_accuracy"] > 0.95 and first.metrics["steps"] == 300
    decayed = _train(decay=0.9)
    assert not torch.equal(decayed.model.weight, first.model.weight)  # the schedule is applied


def _lens_model():
    from gbmi_core.attention import build_attention_only

    return build_attention_only(n_layers=1, d_model=8, d_head=8, d_vocab=6, n_ctx=3, seed=1)


def _forward(skip_pos):
    def forward(weights, tokens):
        residual = weights.W_E[tokens].sum(1)
        if not (skip_pos and bool(tokens[0, 0] == 0)):  # some steps leave W_pos without a gradient
            residual = residual + weights.W_pos.sum(0)
        return (residual @ weights.W_Q[0, 0]) @ weights.W_U
    return forward


def _sample(count, generator):
    return torch.randint(0, 6, (count, 3), generator=generator)


def _label(tokens):
    return tokens.max(-1).values


def _per_tensor_reference(model, forward, decay, steps=60):
    """The loop as torch spells it: one AdamW parameter per weight tensor, LambdaLR for the decay."""
    from gbmi_core import lens
    from gbmi_core.training import TRAIN_STREAM, generator

    arch, names = lens.architecture(model), lens.trainable(model)
    state = {name: value.clone() for name, value in lens.canonical_state(model).items()}
    trainable = [state[name].requires_grad_() for name in lens.parameter_names(arch) if name in names]
    weights = lens.Weights(state, arch)
    optimiser = torch.optim.AdamW(trainable, lr=0.01, betas=(0.9, 0.98), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - decay * step / steps)
    data = generator(7, TRAIN_STREAM)
    for _ in range(steps):
        tokens = _sample(32, data)
        loss = torch.nn.functional.cross_entropy(forward(weights, tokens), _label(tokens))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return {name: value.detach() for name, value in state.items()}


def test_one_flat_adamw_trains_the_weights_of_per_tensor_adamw_bit_for_bit():
    """The loop updates every trainable weight of a TransformerLens model as one flat tensor; AdamW is
    elementwise, so that must change no float: with a decaying rate, and when some steps leave a weight
    without a gradient (then torch skips it, step count too, and the loop hands over to per-tensor AdamW)."""
    from gbmi_core import lens

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for decay, skip_pos in ((0.0, False), (0.5, False), (0.5, True)):
            forward = _forward(skip_pos)
            expected = _per_tensor_reference(_lens_model(), forward, decay)
            trained = train_on_samples(_lens_model(), sample=_sample, label=_label, forward=forward, seed=7, steps=60,
                                       batch_size=32, lr=0.01, betas=(0.9, 0.98), weight_decay=0.1, decay=decay,
                                       progress=False).model
            got = lens.canonical_state(trained)
            assert got.keys() == expected.keys()
            for name in expected:
                assert torch.equal(got[name], expected[name]), (decay, skip_pos, name)
            assert not torch.equal(got["pos_embed.W_pos"], lens.canonical_state(_lens_model())["pos_embed.W_pos"])
    finally:
        torch.set_num_threads(threads)
