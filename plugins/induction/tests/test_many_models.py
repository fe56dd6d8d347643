"""Several models proved in one process each get the count they get alone (no cache keyed by identity)."""

import json
import subprocess
import sys

import torch

from gbmi_core import lens

from .conftest import random_model

ALONE = """
import json, sys, torch, gbmi_core
from gbmi_induction.config import InductionConfig
from gbmi_induction.model import build_model
registry = gbmi_core.get_registry()
model = build_model(InductionConfig(d=5, n=4, d_model=8, d_head=4))
gbmi_core.lens.load_state(model, torch.load(sys.argv[1]))
print(json.dumps({s.name: s.prove(model).correct_count for s in registry.strategies("induction")}))
"""


def _models():
    return {"random": random_model(5, 4, seed=1), "sharp": random_model(5, 4, seed=2, qk_scale=8.0),
            "biased": random_model(5, 4, seed=3, biases=True), "tiny": random_model(5, 4, seed=4, scale=1e-6)}


def test_every_strategy_counts_each_model_as_alone_in_any_order(registry, tmp_path):
    models = _models()
    alone = {}
    for name, model in models.items():
        path = tmp_path / f"{name}.pt"
        torch.save(lens.canonical_state(model), path)
        run = subprocess.run([sys.executable, "-c", ALONE, str(path)], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        alone[name] = json.loads(run.stdout.strip().splitlines()[-1])
    names = list(models)
    for order in (names, names[::-1]):
        for name in order:
            model = random_model(5, 4, seed=0)  # a fresh module each time: freed memory gets reused
            lens.load_state(model, {k: v.clone() for k, v in lens.canonical_state(models[name]).items()})
            for strategy in registry.strategies("induction"):
                assert strategy.prove(model).correct_count == alone[name][strategy.name], (order, name, strategy.name)
