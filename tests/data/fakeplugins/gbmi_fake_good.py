"""A well-behaved fake plugin (test data): one task, one strategy."""

import attrs

from gbmi_core import Bound, StrategySpec, TaskSpec, hookimpl


@attrs.frozen
class GoodConfig:
    seed: int = 0


@hookimpl
def gbmi_tasks():
    return [TaskSpec(name="fake-good", summary="A fake task.", config_type=GoodConfig, build_model=lambda c: None)]


@hookimpl
def gbmi_proof_strategies():
    return [StrategySpec(task="fake-good", name="trivial", summary="Proves nothing.", complexity="O(1)",
                         verify=lambda model, certificate: Bound(0, 1))]
