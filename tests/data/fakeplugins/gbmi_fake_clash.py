"""A fake plugin (test data) that registers a task name gbmi_fake_good already has."""

import attrs

from gbmi_core import TaskSpec, hookimpl


@attrs.frozen
class ClashConfig:
    seed: int = 0


@hookimpl
def gbmi_tasks():
    return [TaskSpec(name="fake-good", summary="The same name again.", config_type=ClashConfig,
                     build_model=lambda c: None)]
