"""The Max-of-K task for gbmi: K tokens from [0, V), predict the largest.

Importing this package is cheap; torch and transformer_lens are imported by the submodules that need them.
"""

TASK = "max-of-k"
