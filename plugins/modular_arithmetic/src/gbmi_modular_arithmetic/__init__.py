"""gbmi-modular-arithmetic: a task plugin for gbmi.

``(a, b) -> (a + b) mod p`` (or ``a - b``) by a one-layer transformer with a ReLU MLP: the model that
mechanistic interpretability explained as the "clock" and "pizza" algorithms.  It imports only
``gbmi_core``'s public API.
"""

TASK = "modular-arithmetic"
#: The same models trained and proved on ``(a - b) mod p``: a task of its own, because a proof sees only the
#: model, so the label must come from the task's name, not from a config field the proof cannot read.
SUBTRACTION = "modular-subtraction"
#: task name -> the operation its label is.
OPERATIONS = {TASK: "add", SUBTRACTION: "subtract"}
