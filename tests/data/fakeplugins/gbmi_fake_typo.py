"""A fake plugin (test data) whose hook name is misspelt."""

from gbmi_core import hookimpl


@hookimpl
def gbmi_task():
    return []
