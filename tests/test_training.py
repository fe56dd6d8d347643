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
