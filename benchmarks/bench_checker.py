"""The independent checker's speed per strategy, against the prover's own `gbmi check` in the same process.

    python benchmarks/bench_checker.py            # Max-of-4 (seed 123) and induction-6 (seed 0), shipped models

Prints, per strategy, the seconds `gbmi-check` takes and the seconds `gbmi check` (re-running the prover's
verification) takes, and their ratio.  Targets (issue 16): Max-of-4 cubic or subcubic <= 30 s, Max-of-4 brute
force <= 120 s, every induction-6 bundle <= 60 s.
"""

import pathlib
import sys
import tempfile
import time

import gbmi_check
import gbmi_core
from gbmi_core.bundle import write_bundle


def main(argv=None):
    from gbmi_induction.config import InductionConfig
    from gbmi_induction.reference import load_reference_model as induction_model
    from gbmi_max_of_k.config import MaxOfKConfig
    from gbmi_max_of_k.reference import load_reference_model as max_of_k_model

    registry = gbmi_core.get_registry()
    cases = [("max-of-k", max_of_k_model(), MaxOfKConfig(seed=123),
              ["brute-force", "cubic", "subcubic--eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff",
               "subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-svd",
               "subcubic--eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive"]),
             ("induction", induction_model(), InductionConfig(), ["brute-force", "pair-bounds", "pair-bounds-crude"])]
    folder = pathlib.Path(tempfile.mkdtemp())
    print(f"{'task':<10} {'strategy':<44} {'gbmi-check s':>12} {'gbmi check s':>12} {'ratio':>6}  verdict")
    for task, model, config, names in cases:
        for name in names:
            strategy = registry.strategy(task, name)
            certificate = strategy.search(model)
            path = write_bundle(folder / task, strategy, model, config, certificate,
                                strategy.prove(model, certificate=certificate))
            start = time.perf_counter()
            verdict = gbmi_check.check(path)
            independent = time.perf_counter() - start
            start = time.perf_counter()
            own = gbmi_core.check(path, registry)
            prover = time.perf_counter() - start
            short = strategy.spec.display_name
            print(f"{task:<10} {short:<44} {independent:12.1f} {prover:12.1f} {independent / prover:6.1f}  "
                  f"{'agree' if verdict.agree and own.agree else 'DISAGREE'} ({verdict.proved}/{verdict.claimed})",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
