"""Brute force and cubic proofs against exact answers."""

import expecttest
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gbmi_core
from gbmi_core import lens
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
    with lens.editing(model) as w:
        w["unembed.W_U"].zero_()
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
        self.assertExpectedInline(self.summary("brute-force"), """brute-force: bound 0.9994 correct 16767402/16777216 flops 5951592121 unexplained 1073741824""")

    def test_all_subcubic_variants(self):
        lines = [self.summary(s.name).replace("subcubic--", "") for s in self.registry.strategies("max-of-k")
                 if s.name.startswith("subcubic")]
        self.assertExpectedInline("\n".join(lines), """\
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.4543 correct 7622705/16777216 flops 8453857 unexplained 8258
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.4349 correct 7295909/16777216 flops 7988196 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.4515 correct 7574745/16777216 flops 8830716 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.4413 correct 7403628/16777216 flops 12116938 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.2356 correct 3953488/16777216 flops 9347924 unexplained 4354
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.4348 correct 7295554/16777216 flops 8080517 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.4412 correct 7402470/16777216 flops 12393904 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.2353 correct 3947330/16777216 flops 9511729 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2315 correct 3883314/16777216 flops 9711370 unexplained 4418
eupu-global-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.3868 correct 6489206/16777216 flops 13673879 unexplained 4290
eupu-global-max-diff-exact--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.8178 correct 13720226/16777216 flops 8456926 unexplained 8258
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff: bound 0.7752 correct 13006376/16777216 flops 7991173 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-exact: bound 0.8105 correct 13598163/16777216 flops 8833765 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct: bound 0.7924 correct 13293449/16777216 flops 12119952 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.3791 correct 6360746/16777216 flops 9349907 unexplained 4354
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff: bound 0.7751 correct 13004233/16777216 flops 8083494 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.7919 correct 13285326/16777216 flops 12396917 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.3793 correct 6364355/16777216 flops 9513714 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3692 correct 6194971/16777216 flops 9713326 unexplained 4418
eupu-global-max-diff-exact--attn-mean-query+diff--err-svd: bound 0.6599 correct 11070713/16777216 flops 13676571 unexplained 4290
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.0500 correct 838893/16777216 flops 8548060 unexplained 10306
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.0490 correct 822888/16777216 flops 8082428 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.0498 correct 836316/16777216 flops 8924924 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.0495 correct 830505/16777216 flops 12211164 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.0350 correct 588028/16777216 flops 9442635 unexplained 6402
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.0491 correct 823608/16777216 flops 8174750 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.0495 correct 830868/16777216 flops 12488130 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.0351 correct 588082/16777216 flops 9606445 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.0348 correct 583375/16777216 flops 9806096 unexplained 6466
eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.0463 correct 776880/16777216 flops 13768207 unexplained 6338
eupu-max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.1102 correct 1849575/16777216 flops 8548352 unexplained 10306
eupu-max-diff--attn-mean-query+diff--err-max-diff: bound 0.1080 correct 1812589/16777216 flops 8082716 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.1099 correct 1844256/16777216 flops 8925216 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.1087 correct 1823022/16777216 flops 12211454 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.0723 correct 1212381/16777216 flops 9442882 unexplained 6402
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.1081 correct 1812901/16777216 flops 8175038 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.1087 correct 1823019/16777216 flops 12488420 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.0717 correct 1203606/16777216 flops 9606691 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.0709 correct 1189817/16777216 flops 9806340 unexplained 6466
eupu-max-diff--attn-mean-query+diff--err-svd: bound 0.1000 correct 1677669/16777216 flops 13768488 unexplained 6338
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.7213 correct 12100902/16777216 flops 8439278 unexplained 8384
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.6846 correct 11486138/16777216 flops 7973579 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.7137 correct 11973961/16777216 flops 8816123 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.6981 correct 11711688/16777216 flops 12102333 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.3515 correct 5896707/16777216 flops 9332876 unexplained 4480
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.6845 correct 11483179/16777216 flops 8065902 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.6981 correct 11711631/16777216 flops 12379299 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.3508 correct 5886160/16777216 flops 9496684 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3421 correct 5738804/16777216 flops 9696305 unexplained 4544
eupu-max-diff-exact--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.5929 correct 9946496/16777216 flops 13659142 unexplained 4416
eupu-max-diff-exact--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.8505 correct 14269396/16777216 flops 8440935 unexplained 8384
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff: bound 0.8075 correct 13548397/16777216 flops 7975168 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-exact: bound 0.8404 correct 14099075/16777216 flops 8817762 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct: bound 0.8228 correct 13804643/16777216 flops 12103949 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.3937 correct 6604469/16777216 flops 9333721 unexplained 4480
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff: bound 0.8066 correct 13532917/16777216 flops 8067489 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.8227 correct 13802780/16777216 flops 12380915 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.3934 correct 6599619/16777216 flops 9497536 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.3846 correct 6452947/16777216 flops 9697141 unexplained 4544
eupu-max-diff-exact--attn-mean-query+diff--err-svd: bound 0.6834 correct 11466230/16777216 flops 13660488 unexplained 4416
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.2450 correct 4109884/16777216 flops 8569644 unexplained 10370
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.2373 correct 3980464/16777216 flops 8104001 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.2437 correct 4088287/16777216 flops 8946507 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.2390 correct 4010545/16777216 flops 12232739 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.1506 correct 2526526/16777216 flops 9464031 unexplained 6466
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.2373 correct 3981601/16777216 flops 8196323 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.2390 correct 4010215/16777216 flops 12509705 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.1505 correct 2524179/16777216 flops 9627839 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.1484 correct 2489588/16777216 flops 9827481 unexplained 6530
eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.2161 correct 3624969/16777216 flops 13789746 unexplained 6402
eupu-mean-query+max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.6065 correct 10175682/16777216 flops 8572291 unexplained 10370
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff: bound 0.5802 correct 9733668/16777216 flops 8106601 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.5995 correct 10057616/16777216 flops 8949141 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.5892 correct 9885617/16777216 flops 12235350 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.2990 correct 5016045/16777216 flops 9465798 unexplained 6466
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.5787 correct 9709406/16777216 flops 8198918 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.5891 correct 9883649/16777216 flops 12512316 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.2989 correct 5014313/16777216 flops 9629605 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2935 correct 4923787/16777216 flops 9829238 unexplained 6530
eupu-mean-query+max-diff--attn-mean-query+diff--err-svd: bound 0.4999 correct 8386782/16777216 flops 13792135 unexplained 6402
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-exact-EQKE+max-diff-exact: bound 0.2445 correct 4102676/16777216 flops 8549175 unexplained 10370
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff: bound 0.2370 correct 3976736/16777216 flops 8083533 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-exact: bound 0.2430 correct 4076540/16777216 flops 8926038 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct: bound 0.2399 correct 4024041/16777216 flops 12212274 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-max-diff-subproduct-recursive: bound 0.1521 correct 2552306/16777216 flops 9443565 unexplained 6466
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff: bound 0.2370 correct 3976061/16777216 flops 8175855 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct: bound 0.2398 correct 4023480/16777216 flops 12489240 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct-recursive: bound 0.1519 correct 2548437/16777216 flops 9607372 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean-recursive+max-diff-subproduct-recursive: bound 0.1497 correct 2510826/16777216 flops 9807015 unexplained 6530
eupu-svd-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd: bound 0.2166 correct 3634073/16777216 flops 13769281 unexplained 6402
eupu-svd-query+max-diff--attn-mean-query+diff--err-exact-EQKE+max-diff-exact: bound 0.6089 correct 10215005/16777216 flops 8551908 unexplained 10370
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff: bound 0.5828 correct 9777606/16777216 flops 8086226 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-exact: bound 0.6024 correct 10105929/16777216 flops 8928767 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct: bound 0.5914 correct 9921937/16777216 flops 12214972 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-max-diff-subproduct-recursive: bound 0.3024 correct 5073055/16777216 flops 9445427 unexplained 6466
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff: bound 0.5829 correct 9778829/16777216 flops 8178549 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct: bound 0.5913 correct 9920304/16777216 flops 12491937 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean+max-diff-subproduct-recursive: bound 0.3021 correct 5068063/16777216 flops 9609235 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-mean-recursive+max-diff-subproduct-recursive: bound 0.2969 correct 4980542/16777216 flops 9808864 unexplained 6530
eupu-svd-query+max-diff--attn-mean-query+diff--err-svd: bound 0.5024 correct 8428425/16777216 flops 13771771 unexplained 6402""")

    def test_cubic(self):
        self.assertExpectedInline(self.summary("cubic"), """cubic: bound 0.9426 correct 15814024/16777216 flops 43813720 unexplained 12800""")


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
