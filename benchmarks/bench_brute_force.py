"""Certified brute force on Max-of-4 against HookedTransformer forward on all 64^4 inputs.

Three models: the shipped reference model, and two *sharp* ones built from it (W_Q and W_K scaled so that
pre-softmax score differences run into the thousands (x16) or near ten thousand (x64), W_U scaled by 100 or
1000 so that logits reach thousands to tens of thousands: the kind of model on which an uncertified float32
screen miscounts).  Both timings run in this process, like
for like: accuracy only against forward + argmax, accuracy and mean loss against forward + argmax +
cross-entropy (what the research code's brute force records).  Target: at least 20x on both models.

    .venv/bin/python benchmarks/bench_brute_force.py [--repeat 3]
"""

import argparse
import time

import torch


def sharpen(model, qk: float, unembed: float):
    """A copy of ``model`` with attention ``qk^2`` times sharper and logits ``unembed`` times larger (through
    :mod:`gbmi_core.lens`, so under TransformerLens 3.x and 4.x alike)."""
    from gbmi_core import lens

    arch = lens.architecture(model)
    sharp = lens.build(arch, state={k: v.clone() for k, v in lens.canonical_state(model, arch).items()})
    with lens.editing(sharp) as w:
        w["blocks.0.attn.W_Q"].mul_(qk)
        w["blocks.0.attn.W_K"].mul_(qk)
        w["unembed.W_U"].mul_(unembed)
    return sharp


def describe(model) -> str:
    from gbmi_max_of_k.model import paths

    P = paths(model)
    scores = (P.EQKE()[:, :, None] + P.EQKP()[:, None, :]) / P.attn_scale
    spread = (scores.amax((1, 2)) - scores.amin((1, 2))).max()
    logits = (P.EUPU().abs().max() + (P.EVOU().abs().max() + P.PVOU().abs().max()))
    return f"score range per query up to {float(spread):.3g}, |logits| up to about {float(logits):.3g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the proof (the best is reported)")
    parser.add_argument("--batch-size", type=int, default=8192)
    args = parser.parse_args()

    from gbmi_max_of_k.brute_force import brute_force, enumerate_with_forward
    from gbmi_max_of_k.reference import load_reference_model

    shipped = load_reference_model()
    total = 64**4
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    models = [("shipped", shipped), ("sharp", sharpen(shipped, qk=4.0, unembed=100.0)),
              ("sharper", sharpen(shipped, qk=8.0, unembed=1000.0))]
    for name, model in models:
        print(f"== {name} model: {describe(model)}")
        baseline = {}
        for with_loss in (False, True):
            start = time.perf_counter()
            forward = enumerate_with_forward(model, batch_size=args.batch_size, with_loss=with_loss)
            baseline[with_loss] = time.perf_counter() - start
            forward_correct = forward[0]
            label = "accuracy and mean loss" if with_loss else "accuracy only"
            print(f"HookedTransformer forward, {label:22s}: {baseline[with_loss]:8.2f} s  "
                  f"({forward_correct}/{total} correct in float32" + (f"; mean loss {forward[2]:.4g})" if with_loss else ")"))
        for with_loss in (False, True):
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                bound = brute_force(model, with_loss=with_loss)
                times.append(time.perf_counter() - start)
            best = min(times)
            label = "accuracy and mean loss" if with_loss else "accuracy only"
            print(f"certified brute force,     {label:22s}: {best:8.2f} s  ratio {baseline[with_loss] / best:5.1f}x  "
                  f"({bound.correct_count}/{total} correct in exact arithmetic; rechecked in float64 "
                  f"{bound.extra['rechecked_float64']}, in mpmath {bound.extra['rechecked_mpmath']}, undecided "
                  f"{bound.extra['undecided']}" + (f"; mean loss {bound.extra['mean_loss']:.4g})" if with_loss else ")"))
        print(f"float32 forward minus exact count: {forward_correct - bound.correct_count:+d}")


if __name__ == "__main__":
    main()
