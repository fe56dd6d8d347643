"""gbmi-induction: a third-party task plugin for gbmi.

A 2-layer attention-only transformer that completes an induction pattern (``... q a ... q -> a``), with a
certified brute force and compact proofs of its accuracy.  It imports only ``gbmi_core``'s public API.
"""

TASK = "induction"
