"""Brute force and cubic proofs against exact answers."""

import expecttest
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gbmi_core
from gbmi_max_of_k.brute_force import brute_force, enumerate_with_forward

from .conftest import small_model, trained_model


@pytest.fixture(scope="module")
def registry():
    return gbmi_core.get_registry()


@pytest.mark.parametrize("V, K, seed", [(5, 2, 0), (6, 3, 1), (7, 4, 2), (4, 5, 3), (12, 3, 4)])
def test_brute_force_equals_forward_enumeration_exactly(V, K, seed):
    """On small configs, the path decomposition counts exactly what a float64 forward pass counts."""
    model = small_model(V, K, seed=seed, qk_scale=3.0)
    expected = enumerate_with_forward(model.double(), batch_size=97)
    model = small_model(V, K, seed=seed, qk_scale=3.0)
    bound = brute_force(model, block_elements=V * 3)  # small blocks: exercise the blocking
    assert (bound.correct_count, bound.total_count) == expected
    tokens = torch.cartesian_prod(*[torch.arange(V)] * K)
    logits = model.double()(tokens)[:, -1]
    loss = torch.nn.functional.cross_entropy(logits, tokens.max(-1).values).item()
    assert bound.extra["mean_loss"] == pytest.approx(loss, rel=1e-5)


def test_brute_force_decides_exact_ties():
    """A model whose logits all tie gets nothing right: equal unembedding columns tie in exact arithmetic,
    so the float64 stage decides every input (wrong) and nothing is left undecided."""
    model = small_model(5, 3)
    with torch.no_grad():
        model.W_U.zero_()
    bound = brute_force(model)
    assert bound.correct_count == 0
    assert bound.extra["rechecked_float64"] == 5**3 and bound.extra["undecided"] == 0


weights = st.sampled_from(["random", "sharp", "trained"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(V=st.integers(4, 12), K=st.integers(2, 4), seed=st.integers(0, 10_000), kind=weights,
       scale=st.sampled_from([0.5, 1.0, 4.0]))
def test_every_strategy_is_sound(registry, V, K, seed, kind, scale):
    if kind == "trained":
        model = trained_model(min(V, 8), K, seed=seed % 3)
    else:
        model = small_model(V, K, d_model=8, seed=seed, qk_scale=10.0 if kind == "sharp" else 1.0, scale=scale)
    exact = registry.strategy("max-of-k", "brute-force").prove(model)
    for strategy in registry.strategies("max-of-k"):
        result = strategy.prove(model)
        assert result.correct_count <= exact.correct_count, strategy.name
        assert result.total_count == exact.total_count


def test_cubic_is_tight_on_a_trained_model(registry):
    model = trained_model(8, 3, seed=0, steps=600)
    exact = registry.strategy("max-of-k", "brute-force").prove(model)
    cubic = registry.strategy("max-of-k", "cubic").prove(model)
    assert 0.5 * exact.correct_count < cubic.correct_count <= exact.correct_count


@pytest.fixture(scope="module")
def shipped_results(reference_model, registry):
    """Every strategy proved once on the shipped model, for the pinned results and the ordering test."""
    return {s.name: s.prove(reference_model) for s in registry.strategies("max-of-k")}


class TestShippedModelRegression(expecttest.TestCase):
    """Pinned results on the shipped Max-of-4 model (bound to 4 decimals, counts, FLOPs)."""

    @pytest.fixture(autouse=True)
    def _setup(self, shipped_results, registry):
        self.results, self.registry = shipped_results, registry

    def summary(self, name):
        r = self.results[name]
        assert r.certified, name
        return (f"{r.strategy}: bound {r.accuracy_lower_bound:.4f} correct {r.correct_count}/{r.total_count} "
                f"flops {r.flops} unexplained {r.unexplained_dimension}")

    def test_brute_force(self):
        self.assertExpectedInline(self.summary("brute-force"), """brute-force: bound 0.9950 correct 16693511/16777216 flops 8217417077 unexplained 1073741824""")

    def test_all_subcubic_variants(self):
        lines = [self.summary(s.name).replace("subcubic--", "") for s in self.registry.strategies("max-of-k")
                 if s.name.startswith("subcubic")]
        self.assertExpectedInline("\n".join(lines), """\
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.5170 correct 8673732/16777216 flops 11397636 unexplained 8258
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.4973 correct 8342738/16777216 flops 10931962 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.5130 correct 8606187/16777216 flops 11774489 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.5044 correct 8461778/16777216 flops 15060708 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.2675 correct 4488148/16777216 flops 12291601 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.4965 correct 8330323/16777216 flops 11024283 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.5043 correct 8461115/16777216 flops 15337674 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.2675 correct 4487796/16777216 flops 12455412 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2645 correct 4437893/16777216 flops 12655046 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.4411 correct 7399710/16777216 flops 16613543 unexplained 4290
eupu-global-max-diff-exact--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.7389 correct 12396414/16777216 flops 11940842 unexplained 8258
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff: bound 0.7003 correct 11749735/16777216 flops 11475056 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-exact: bound 0.7317 correct 12276024/16777216 flops 12317702 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct: bound 0.7040 correct 11810713/16777216 flops 15603827 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.3425 correct 5746710/16777216 flops 12833742 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff: bound 0.6987 correct 11722134/16777216 flops 11567376 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.7044 correct 11818434/16777216 flops 15880789 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.3422 correct 5741130/16777216 flops 12997560 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3341 correct 5605125/16777216 flops 13197159 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-svd: bound 0.6155 correct 10326159/16777216 flops 17156375 unexplained 4290
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.0375 correct 629238/16777216 flops 11491382 unexplained 10306
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.0371 correct 622347/16777216 flops 11025750 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.0374 correct 627783/16777216 flops 11868246 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.0372 correct 624171/16777216 flops 15154486 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.0281 correct 471329/16777216 flops 12385962 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.0371 correct 622347/16777216 flops 11118072 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.0372 correct 624171/16777216 flops 15431452 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.0281 correct 470675/16777216 flops 12549772 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.0275 correct 461564/16777216 flops 12749423 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.0358 correct 601212/16777216 flops 16707434 unexplained 6338
eupu-max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.1014 correct 1701906/16777216 flops 12033065 unexplained 10306
eupu-max-diff--attn-mean-query+diff--err-max-diff: bound 0.0911 correct 1529000/16777216 flops 11567351 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.1043 correct 1750589/16777216 flops 12409917 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.0919 correct 1541805/16777216 flops 15696114 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.0662 correct 1110816/16777216 flops 12927413 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.0911 correct 1528732/16777216 flops 11659673 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.0919 correct 1541790/16777216 flops 15973078 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.0661 correct 1108479/16777216 flops 13091224 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.0642 correct 1076766/16777216 flops 13290875 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-svd: bound 0.0894 correct 1500564/16777216 flops 17248938 unexplained 6338
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.7172 correct 12032958/16777216 flops 11382553 unexplained 8384
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.6918 correct 11607123/16777216 flops 10916872 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.7119 correct 11944490/16777216 flops 11759403 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.7012 correct 11764299/16777216 flops 15045618 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.3603 correct 6044657/16777216 flops 12276178 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.6919 correct 11607551/16777216 flops 11009193 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.7010 correct 11760519/16777216 flops 15322582 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.3603 correct 6044314/16777216 flops 12439988 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3539 correct 5938037/16777216 flops 12639620 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.6152 correct 10321288/16777216 flops 16598397 unexplained 4416
eupu-max-diff-exact--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.8068 correct 13536350/16777216 flops 11925328 unexplained 8384
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff: bound 0.7880 correct 13220943/16777216 flops 11459572 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-exact: bound 0.8130 correct 13639166/16777216 flops 12302160 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct: bound 0.8069 correct 13537467/16777216 flops 15588343 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.3918 correct 6572707/16777216 flops 12817992 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff: bound 0.7786 correct 13062176/16777216 flops 11551903 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.8065 correct 13530809/16777216 flops 15865310 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.3929 correct 6591719/16777216 flops 12981827 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3861 correct 6478032/16777216 flops 13181423 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-svd: bound 0.6724 correct 11281554/16777216 flops 17140787 unexplained 4416
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.1803 correct 3025128/16777216 flops 11512695 unexplained 10370
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.1760 correct 2952335/16777216 flops 11047062 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.1794 correct 3009330/16777216 flops 11889559 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.1775 correct 2977985/16777216 flops 15175798 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.1187 correct 1991887/16777216 flops 12407161 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.1760 correct 2951996/16777216 flops 11139384 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.1775 correct 2978021/16777216 flops 15452764 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.1186 correct 1990129/16777216 flops 12570971 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.1168 correct 1958780/16777216 flops 12770618 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.1631 correct 2736720/16777216 flops 16728730 unexplained 6402
eupu-mean-query+max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.5302 correct 8894443/16777216 flops 12056398 unexplained 10370
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff: bound 0.4900 correct 8221243/16777216 flops 11590617 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.5178 correct 8686562/16777216 flops 12433209 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.5005 correct 8397028/16777216 flops 15719405 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.2313 correct 3881072/16777216 flops 12949480 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.4889 correct 8202787/16777216 flops 11682936 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.4989 correct 8370690/16777216 flops 15996362 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.2340 correct 3926292/16777216 flops 13113288 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2278 correct 3822623/16777216 flops 13312916 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-svd: bound 0.4159 correct 6977308/16777216 flops 17271808 unexplained 6402
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.1809 correct 3035221/16777216 flops 11492220 unexplained 10370
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.1765 correct 2961883/16777216 flops 11026588 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.1800 correct 3019915/16777216 flops 11869084 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.1782 correct 2989522/16777216 flops 15155324 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.1193 correct 2001295/16777216 flops 12386689 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.1765 correct 2960752/16777216 flops 11118910 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.1781 correct 2988460/16777216 flops 15432290 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.1196 correct 2006581/16777216 flops 12550500 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.1176 correct 1972193/16777216 flops 12750147 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.1636 correct 2745148/16777216 flops 16708255 unexplained 6402
eupu-svd-query+max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.5374 correct 9016781/16777216 flops 12035992 unexplained 10370
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff: bound 0.4950 correct 8305338/16777216 flops 11570233 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.5160 correct 8656911/16777216 flops 12412819 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.4956 correct 8314341/16777216 flops 15698990 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.2370 correct 3976027/16777216 flops 12929093 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.4933 correct 8275963/16777216 flops 11662556 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.4929 correct 8268975/16777216 flops 15975949 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.2383 correct 3997986/16777216 flops 13092903 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2318 correct 3889221/16777216 flops 13292500 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-svd: bound 0.4309 correct 7229135/16777216 flops 17251451 unexplained 6402""")

    def test_cubic(self):
        self.assertExpectedInline(self.summary("cubic"), """cubic: bound 0.9283 correct 15573639/16777216 flops 339949883 unexplained 12800""")


@pytest.mark.slow
def test_brute_force_agrees_with_float32_forward_up_to_near_ties(reference_model):
    forward_correct, total = enumerate_with_forward(reference_model, batch_size=8192)
    bound = brute_force(reference_model, with_loss=False)
    # The float32 HookedTransformer and the float64 model differ only on near-tie inputs.
    assert abs(forward_correct - bound.correct_count) <= 100, (forward_correct, bound.correct_count)


def test_ordering_on_the_shipped_model(shipped_results):
    exact, cubic = shipped_results["brute-force"], shipped_results["cubic"]
    bounds = [r.accuracy_lower_bound for name, r in shipped_results.items() if name.startswith("subcubic")]
    assert len(bounds) == 100
    assert exact.accuracy_lower_bound >= cubic.accuracy_lower_bound >= max(bounds)
    assert max(bounds) > 0.75  # the best subcubic proof explains most of the model
