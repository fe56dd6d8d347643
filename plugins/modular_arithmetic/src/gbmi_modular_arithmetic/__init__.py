"""gbmi-modular-arithmetic: a task plugin for gbmi.

``(a, b) -> (a + b) mod p`` (or ``a - b``) by a one-layer transformer with a ReLU MLP: the model that
mechanistic interpretability explained as the "clock" and "pizza" algorithms.  It imports only
``gbmi_core``'s public API.
"""

TASK = "modular-arithmetic"
