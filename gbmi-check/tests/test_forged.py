"""Forged bundles (SoundnessBench-style: wrong claims planted): both checkers reject every over-claim.

Each forgery edits a real bundle and raises the claim above the truth (the exact count of the model the
bundle describes, from brute force).  Where the forgery would be caught by a hash alone, the hashes are
recomputed, so that what is tested is the check itself, not the tamper evidence."""

import json

import numpy as np
import pytest

import gbmi_check
import gbmi_core
from gbmi_core.bundle import certificate_hash, claim_hashes
from gbmi_core.errors import GbmiError
from gbmi_core.models import identity_hash, weights_hash

from .conftest import bundle, induction_model, max_of_k_model, modular_model

SUB = "subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-max-diff"


def _load(path):
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: np.array(data[name]) for name in data.files}
    return json.loads(str(arrays.pop("__bundle__"))), arrays


def _save(path, header, arrays, rehash=True):
    if rehash:
        weights = {k[8:]: v for k, v in arrays.items() if k.startswith("weights/")}
        certificate = {k[12:]: v for k, v in arrays.items() if k.startswith("certificate/")}
        try:
            header["weights_hash"] = weights_hash(weights)
            header["model_hash"] = identity_hash(weights, header.get("architecture"))
        except Exception:  # noqa: BLE001 - unhashable forgeries keep their old hashes
            pass
        header["certificate_hash"] = certificate_hash(certificate, header.get("certificate_attrs", {}))
        header["hashes"] = claim_hashes(header)
    with open(path, "wb") as handle:
        np.savez(handle, __bundle__=np.array(json.dumps(header)), **arrays)


def _claim(header, count):
    total = header["claimed"]["total_count"]
    header["claimed"].update(correct_count=count, accuracy_lower_bound=count / total)


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    """Honest bundles of a Max-of-K model that is often wrong, of a worse one, and of an induction model."""
    folder = tmp_path_factory.mktemp("honest")
    a, config = max_of_k_model(6, 3, seed=5, kind="trained")
    b, _ = max_of_k_model(6, 3, seed=6, kind="random")
    h, hconfig = induction_model(5, 4, seed=3, kind="random")
    m, mconfig = modular_model(5, "random", seed=2)  # 7 pairs right on a + b, 6 on a - b
    made = {}
    for name in ("brute-force", "cubic", SUB):
        made["A", name] = bundle(registry, folder / "A", "max-of-k", name, a, config)
        made["B", name] = bundle(registry, folder / "B", "max-of-k", name, b, config)
    for name in ("brute-force", "pair-bounds"):
        made["I", name] = bundle(registry, folder / "I", "induction", name, h, hconfig)
    for name in ("brute-force", "low-rank-8"):
        made["M", name] = bundle(registry, folder / "M", "modular-arithmetic", name, m, mconfig)
    truth = {key: _load(made[key, "brute-force"])[0]["claimed"]["correct_count"] for key in "ABIM"}
    assert truth["B"] < truth["A"] < 216 and truth["I"] < 120 and truth["M"] < 25  # over-claims are possible
    return made, truth


def _cert(name, value):
    def edit(h, a, t):
        a[f"certificate/{name}"] = value(a[f"certificate/{name}"]) if callable(value) else value
        _claim(h, t + 1)
    return edit


def _swap_weights(h, a, t, other):
    for key in list(a):
        if key.startswith("weights/"):
            del a[key]
    a.update({k: v for k, v in other.items() if k.startswith("weights/")})


FORGERIES = {
    # certificates: dtype wraps and narrowing, NaN, ±inf, ±huge, ranges, shapes
    "gap-uint64-wrap": ("A", SUB, _cert("min_gap", lambda g: np.full(g.shape, 2**64 - 3, dtype=np.uint64))),
    "gap-int8-narrowing": ("A", SUB, _cert("min_gap", lambda g: np.full(g.shape, 200).astype(np.int8))),
    "gap-float": ("A", SUB, _cert("min_gap", lambda g: g.astype(np.float64) - 0.5)),
    "gap-bool": ("A", SUB, _cert("min_gap", lambda g: g > 0)),
    "gap-zero": ("A", SUB, _cert("min_gap", lambda g: np.zeros_like(g))),
    "gap-negative": ("A", SUB, _cert("min_gap", lambda g: -g.astype(np.int64))),
    "gap-huge": ("A", SUB, _cert("min_gap", lambda g: np.full(g.shape, 2**62, dtype=np.int64))),
    "gap-shape": ("A", SUB, _cert("min_gap", lambda g: g[:, :, :1])),
    "direction-nan": ("A", SUB, _cert("query_direction", lambda d: np.full_like(d, np.nan))),
    "direction-inf": ("A", SUB, _cert("key_direction", lambda d: np.full_like(d, np.inf))),
    "direction-minus-inf": ("A", SUB, _cert("W_Q_direction", lambda d: np.full_like(d, -np.inf))),
    "direction-huge": ("A", SUB, _cert("W_EP_direction", lambda d: np.full_like(d, 1e308))),
    "split-point-outside": ("A", SUB, _cert("mean_attention", lambda x: x * 0 - 7.0)),
    "split-point-nan": ("A", SUB, _cert("mean_attention", lambda x: x * np.nan)),
    "extra-field": ("A", SUB, _cert("smuggled", np.ones(3))),
    "missing-field": ("A", SUB, lambda h, a, t: (a.pop("certificate/min_gap"), _claim(h, t + 1))),
    # claims: off by one, NaN, bool, inconsistent, totals
    "claim-plus-one": ("A", "brute-force", lambda h, a, t: _claim(h, t + 1)),
    "claim-everything": ("A", "cubic", lambda h, a, t: _claim(h, 216)),
    "claim-nan": ("A", "cubic", lambda h, a, t: h["claimed"].update(correct_count=float("nan"))),
    "claim-bool": ("A", "cubic", lambda h, a, t: h["claimed"].update(correct_count=True, total_count=True)),
    "claim-float": ("A", "brute-force", lambda h, a, t: h["claimed"].update(correct_count=t + 0.5)),
    "claim-bound-inconsistent": ("A", "cubic", lambda h, a, t: h["claimed"].update(accuracy_lower_bound=1.0)),
    "claim-total-shrunk": ("A", "brute-force", lambda h, a, t: h["claimed"].update(
        correct_count=t, total_count=t, accuracy_lower_bound=1.0)),
    "claim-negative-total": ("A", "cubic", lambda h, a, t: h["claimed"].update(total_count=-216)),
    "claim-certified-string": ("A", "cubic", lambda h, a, t: (h["claimed"].update(certified="yes"), _claim(h, t + 1))),
    # weights: NaN, inf, dtype, another model's weights (hashes recomputed), a bias added (the claim now too high)
    "weights-nan": ("A", "cubic", lambda h, a, t: (a["weights/embed.W_E"].__setitem__((0, 0), np.nan), _claim(h, t + 1))),
    "weights-inf": ("A", "cubic", lambda h, a, t: (a["weights/unembed.W_U"].__setitem__((0, 0), np.inf), _claim(h, t + 1))),
    "weights-int": ("A", "cubic", lambda h, a, t: (a.update({"weights/embed.W_E": a["weights/embed.W_E"].astype(np.int64)}),
                                                   _claim(h, t + 1))),
    "weights-of-another-model": ("A", "brute-force", "other-weights"),
    "bias-added": ("A", "brute-force", lambda h, a, t: a["weights/unembed.b_U"].__setitem__(0, 50.0)),
    # another model's certificate; swapped strategy and task names; altered architecture; a changed config
    "certificate-of-another-model": ("B", SUB, "other-certificate"),
    "strategy-renamed": ("A", "brute-force", lambda h, a, t: h.update(strategy="cubic")),
    "strategy-stronger-options": ("A", SUB, lambda h, a, t: (
        h.update(strategy=SUB.replace("err-max-diff", "err-exact-EQKE+max-diff-exact")), _claim(h, t + 1))),
    "task-renamed": ("A", "brute-force", lambda h, a, t: h.update(task="induction")),
    # (these claim every input: the altered model's own exact count is checked below to be lower)
    "attention-scale-changed": ("A", "brute-force", lambda h, a, t: (h["architecture"].update(attn_scale=1e-3),
                                                                      _claim(h, 216))),
    "attention-scale-switched-off": ("A", "brute-force", lambda h, a, t: (h["architecture"].update(use_attn_scale=False),
                                                                           _claim(h, 216))),
    "config-changed": ("A", "cubic", lambda h, a, t: (h["config"].update(V=5), _claim(h, t + 1))),
    # induction
    "induction-claim-plus-one": ("I", "brute-force", lambda h, a, t: _claim(h, t + 1)),
    "induction-pairs-over-claim": ("I", "pair-bounds", lambda h, a, t: _claim(h, t + 1)),
    "induction-roots-uint": ("I", "pair-bounds", lambda h, a, t: (
        [a.update({k: np.full(v.shape, 2**63, dtype=np.uint64)}) for k, v in list(a.items()) if k.startswith("certificate/")],
        _claim(h, t + 1))),
    "induction-weights-nan": ("I", "brute-force", lambda h, a, t: a["weights/embed.W_E"].__setitem__((1, 1), np.nan)),
    # modular addition
    "modular-claim-plus-one": ("M", "brute-force", lambda h, a, t: _claim(h, t + 1)),
    "modular-low-rank-over-claim": ("M", "low-rank-8", lambda h, a, t: _claim(h, t + 1)),
    "modular-basis-nan": ("M", "low-rank-8", lambda h, a, t: a["certificate/basis"].__setitem__((0, 0), np.nan)),
    "modular-activation-swapped": ("M", "brute-force", lambda h, a, t: (h["architecture"].update(act_fn="silu"),
                                                                      _claim(h, t))),
    # the addition count claimed for a - b (the same weights get fewer pairs right there)
    "modular-task-swapped": ("M", "brute-force", lambda h, a, t: h.update(task="modular-subtraction")),
    "modular-extra-weight": ("M", "brute-force", lambda h, a, t: (a.update({"weights/blocks.0.ln1.w": np.ones(16)}),
                                                                _claim(h, t + 1))),
}


def _core_rejects(path) -> bool:
    try:
        return not gbmi_core.check(path).agree
    except GbmiError:  # unreadable, or naming what no plugin provides: refused
        return True


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_both_checkers_reject_every_forged_over_claim(world, tmp_path, name):
    made, truth = world
    model, strategy, edit = FORGERIES[name]
    header, arrays = _load(made[model, strategy])
    t = truth[model]
    if edit == "other-weights":  # model A's exact claim, over B's weights
        _swap_weights(header, arrays, t, _load(made["B", "brute-force"])[1])
        assert truth["B"] < header["claimed"]["correct_count"]
    elif edit == "other-certificate":  # B's certificate in A's bundle, claiming what B's bundle claims... plus one
        donor, _ = _load(made["A", SUB])
        header.update({k: donor[k] for k in ("config", "architecture")})
        _swap_weights(header, arrays, t, _load(made["A", SUB])[1])
        _claim(header, truth["A"] + 1)
    else:
        edit(header, arrays, t)
    path = tmp_path / f"{name}.gbmi-proof.npz"
    _save(path, header, arrays)
    assert _core_rejects(path), f"gbmi check accepted the forgery {name}"
    verdict = gbmi_check.check(path)
    assert not verdict.agree, f"gbmi-check accepted the forgery {name}: {verdict.message}"
    if name.startswith("attention-scale") or name == "bias-added":  # the altered model's exact count
        assert verdict.proved < header["claimed"]["correct_count"]


def test_there_are_at_least_thirty_forgeries():
    assert len(FORGERIES) >= 30


def test_an_honest_bundle_passes_both_after_the_same_rehashing(world, tmp_path):
    made, _ = world
    for key in made:
        header, arrays = _load(made[key])
        path = tmp_path / made[key].name
        _save(path, header, arrays)
        assert gbmi_core.check(path).agree and gbmi_check.check(path).agree, key
