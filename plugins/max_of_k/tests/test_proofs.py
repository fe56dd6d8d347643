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
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.5170 correct 8673732/16777216 flops 8454256 unexplained 8258
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.4973 correct 8342738/16777216 flops 7988582 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.5130 correct 8606187/16777216 flops 8831109 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.5044 correct 8461778/16777216 flops 12117328 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.2675 correct 4488148/16777216 flops 9348221 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.4965 correct 8330323/16777216 flops 8080903 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.5043 correct 8461115/16777216 flops 12394294 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.2675 correct 4487796/16777216 flops 9512032 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2645 correct 4437893/16777216 flops 9711666 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.4411 correct 7399710/16777216 flops 13674258 unexplained 4290
eupu-global-max-diff-exact--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.7521 correct 12617839/16777216 flops 8456380 unexplained 8258
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff: bound 0.7236 correct 12139188/16777216 flops 7990664 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-exact: bound 0.7451 correct 12501002/16777216 flops 8833225 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct: bound 0.7334 correct 12304556/16777216 flops 12119421 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.3619 correct 6072334/16777216 flops 9349580 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff: bound 0.7233 correct 12134144/16777216 flops 8082983 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.7332 correct 12301843/16777216 flops 12396387 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.3623 correct 6078822/16777216 flops 9513388 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3567 correct 5984611/16777216 flops 9713011 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-svd: bound 0.6368 correct 10683598/16777216 flops 13676170 unexplained 4290
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.0375 correct 629238/16777216 flops 8548002 unexplained 10306
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.0371 correct 622347/16777216 flops 8082370 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.0374 correct 627783/16777216 flops 8924866 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.0372 correct 624171/16777216 flops 12211106 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.0281 correct 471329/16777216 flops 9442582 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.0371 correct 622347/16777216 flops 8174692 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.0372 correct 624171/16777216 flops 12488072 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.0281 correct 470675/16777216 flops 9606392 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.0275 correct 461564/16777216 flops 9806043 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.0358 correct 601212/16777216 flops 13768149 unexplained 6338
eupu-max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.1465 correct 2457702/16777216 flops 8548546 unexplained 10306
eupu-max-diff--attn-mean-query+diff--err-max-diff: bound 0.1417 correct 2377846/16777216 flops 8082910 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.1455 correct 2440420/16777216 flops 8925409 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.1432 correct 2401855/16777216 flops 12211648 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.0906 correct 1519867/16777216 flops 9443050 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.1417 correct 2377693/16777216 flops 8175232 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.1432 correct 2401915/16777216 flops 12488614 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.0907 correct 1522264/16777216 flops 9606860 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.0892 correct 1496516/16777216 flops 9806511 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-svd: bound 0.1305 correct 2189473/16777216 flops 13768681 unexplained 6338
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.7172 correct 12032958/16777216 flops 8439173 unexplained 8384
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.6918 correct 11607123/16777216 flops 7973492 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.7119 correct 11944490/16777216 flops 8816023 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.7012 correct 11764299/16777216 flops 12102238 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.3603 correct 6044657/16777216 flops 9332798 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.6919 correct 11607551/16777216 flops 8065813 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.7010 correct 11760519/16777216 flops 12379202 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.3603 correct 6044314/16777216 flops 9496608 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3539 correct 5938037/16777216 flops 9696240 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.6152 correct 10321288/16777216 flops 13659112 unexplained 4416
eupu-max-diff-exact--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.8387 correct 14071791/16777216 flops 8440857 unexplained 8384
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff: bound 0.8018 correct 13452066/16777216 flops 7975080 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-exact: bound 0.8294 correct 13914943/16777216 flops 8817683 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct: bound 0.8142 correct 13659515/16777216 flops 12103856 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.4033 correct 6765830/16777216 flops 9333656 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff: bound 0.8016 correct 13448230/16777216 flops 8067404 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.8142 correct 13659595/16777216 flops 12380823 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.4045 correct 6785570/16777216 flops 9497470 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3961 correct 6645536/16777216 flops 9697079 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-svd: bound 0.7071 correct 11862331/16777216 flops 13660479 unexplained 4416
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.1803 correct 3025128/16777216 flops 8569315 unexplained 10370
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.1760 correct 2952335/16777216 flops 8103682 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.1794 correct 3009330/16777216 flops 8946179 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.1775 correct 2977985/16777216 flops 12232418 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.1187 correct 1991887/16777216 flops 9463781 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.1760 correct 2951996/16777216 flops 8196004 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.1775 correct 2978021/16777216 flops 12509384 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.1186 correct 1990129/16777216 flops 9627591 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.1168 correct 1958780/16777216 flops 9827238 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.1631 correct 2736720/16777216 flops 13789445 unexplained 6402
eupu-mean-query+max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.5610 correct 9411714/16777216 flops 8572005 unexplained 10370
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff: bound 0.5402 correct 9063670/16777216 flops 8106325 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.5563 correct 9333454/16777216 flops 8948854 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.5486 correct 9204153/16777216 flops 12235071 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.2829 correct 4745680/16777216 flops 9465589 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.5396 correct 9053455/16777216 flops 8198646 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.5487 correct 9204852/16777216 flops 12512037 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.2831 correct 4748950/16777216 flops 9629398 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2790 correct 4680401/16777216 flops 9829027 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-svd: bound 0.4757 correct 7980098/16777216 flops 13791920 unexplained 6402
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.1809 correct 3035221/16777216 flops 8548840 unexplained 10370
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.1765 correct 2961883/16777216 flops 8083208 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.1800 correct 3019915/16777216 flops 8925704 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.1782 correct 2989522/16777216 flops 12211944 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.1193 correct 2001295/16777216 flops 9443309 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.1765 correct 2960752/16777216 flops 8175530 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.1781 correct 2988460/16777216 flops 12488910 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.1196 correct 2006581/16777216 flops 9607120 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.1176 correct 1972193/16777216 flops 9806767 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.1636 correct 2745148/16777216 flops 13768970 unexplained 6402
eupu-svd-query+max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.5645 correct 9469998/16777216 flops 8551608 unexplained 10370
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff: bound 0.5448 correct 9139851/16777216 flops 8085928 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.5612 correct 9415198/16777216 flops 8928462 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.5538 correct 9290584/16777216 flops 12214673 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.2858 correct 4794994/16777216 flops 9445178 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.5446 correct 9137102/16777216 flops 8178248 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.5536 correct 9288259/16777216 flops 12491639 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.2860 correct 4797449/16777216 flops 9608987 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2806 correct 4707604/16777216 flops 9808614 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-svd: bound 0.4798 correct 8049324/16777216 flops 13771513 unexplained 6402""")

    def test_cubic(self):
        self.assertExpectedInline(self.summary("cubic"), """cubic: bound 0.9283 correct 15573639/16777216 flops 43813716 unexplained 12800""")


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
