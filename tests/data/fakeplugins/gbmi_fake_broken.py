"""A fake plugin (test data) that fails on import."""

raise ImportError("No module named 'some_missing_dependency'")
