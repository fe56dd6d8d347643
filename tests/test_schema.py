"""Certificate schemas: the core refuses what a strategy did not declare, before its verification runs."""

import numpy as np
import pytest

import gbmi_core
from gbmi_core import ArrayField, Certificate, CertificateRejected, CertificateSchema, ScalarField
from gbmi_core.schema import validate

DIMS = {"d_vocab": 4, "n_ctx": 3}
SCHEMA = CertificateSchema(
    {"gap": ArrayField("int", ("d_vocab", "n_ctx"), low=1, high="d_vocab"),
     "split": ArrayField("float", ("n_ctx",), low=0.0, high=1.0, required=False)},
    attributes={"steps": ScalarField("int", low=0, high=8)},
    patterns={r"root_[0-9]+": ArrayField("float", finite=False)})
GAP = np.ones((4, 3), dtype=np.int16)


def _check(arrays, attributes=None):
    return validate(SCHEMA, arrays, {"steps": 2} if attributes is None else attributes, DIMS)


def test_a_well_formed_certificate_comes_back_in_canonical_dtypes():
    arrays, attributes = _check({"gap": GAP, "split": np.float32([0, 0.5, 1]), "root_7": np.array([np.inf])})
    assert arrays["gap"].dtype == np.int64 and arrays["split"].dtype == np.float64 and attributes == {"steps": 2}
    arrays["gap"][0, 0] = 9  # a copy: the caller's array is untouched
    assert GAP[0, 0] == 1


@pytest.mark.parametrize("arrays, message", [
    ({"gap": np.full((4, 3), 2**64 - 3, dtype=np.uint64)}, "dtype uint64; expected signed integers"),
    ({"gap": GAP > 0}, "dtype bool"),
    ({"gap": GAP.astype(np.float64)}, "dtype float64; expected signed"),
    ({"gap": GAP.astype(object)}, "dtype object"),
    ({"gap": GAP.astype(np.int64) * 0}, "'gap' holds values below 1"),
    ({"gap": GAP.astype(np.int64) * 5}, "'gap' holds values above 4"),
    ({"gap": GAP[:, :2]}, r"shape \(4, 2\); expected \(4, 3\)"),
    ({"gap": [[1] * 3] * 4}, "is a list, not an array"),
    ({"gap": GAP, "split": np.array([0.0, np.nan, 1.0])}, "'split' holds NaN or infinite"),
    ({"gap": GAP, "split": np.array([0.0, 2.0, 1.0])}, "'split' holds values above 1.0"),
    ({"gap": GAP, "split": np.float16([0, 0, 0]).view(np.int16)}, "'split' has dtype int16"),
    ({}, "'gap' is missing"),
    ({"gap": GAP, "smuggled": GAP}, "'smuggled' is not part of"),
    ({"gap": GAP, "root_x": np.ones(2)}, "'root_x' is not part of"),
])
def test_malformed_arrays_are_refused_naming_the_field(arrays, message):
    with pytest.raises(CertificateRejected, match=message):
        _check(arrays)


@pytest.mark.parametrize("attributes, message", [
    ({"steps": True}, "'steps' is True; expected an int"),
    ({"steps": 2.0}, "expected an int"),
    ({"steps": 9}, r"outside \[0, 8\]"),
    ({}, "'steps' is missing"),
    ({"steps": 2, "more": 1}, "'more' is not part of"),
])
def test_malformed_attributes_are_refused(attributes, message):
    with pytest.raises(CertificateRejected, match=message):
        _check({"gap": GAP}, attributes)


def test_a_dimension_the_model_lacks_is_refused():
    with pytest.raises(CertificateRejected, match="no dimension 'd_vocab'"):
        validate(SCHEMA, {"gap": GAP}, {"steps": 1}, {})


class _Strict:
    """A strategy with a schema whose verification records what it was handed."""

    seen = []

    @gbmi_core.hookimpl
    def gbmi_proof_strategies(self):
        def verify(model, certificate):
            _Strict.seen.append({k: v.dtype for k, v in certificate.arrays.items()})
            return gbmi_core.Bound(0, 1)

        return [gbmi_core.StrategySpec(task="majority", name="strict", summary="Checks its certificate.",
                                       complexity="O(1)", verify=verify,
                                       certificate=CertificateSchema({"w": ArrayField("int", (2,), low=0)}))]


def test_the_core_validates_before_verification_runs(example_plugin_module):
    import torch

    registry = gbmi_core.get_registry(load_entrypoints=False,
                                      plugins=[("majority", example_plugin_module), ("strict", _Strict())])
    strategy = registry.strategy("majority", "strict")
    model = torch.nn.Linear(3, 2)
    from gbmi_core.models import model_hash

    forged = Certificate("strict", model_hash(model), {"w": np.array([2**64 - 1, 1], dtype=np.uint64)})
    with pytest.raises(CertificateRejected, match="'w' has dtype uint64"):
        strategy.prove(model, certificate=forged)
    assert _Strict.seen == []  # verification never saw it
    strategy.prove(model, certificate=Certificate("strict", model_hash(model), {"w": np.array([3, 1], dtype=np.int8)}))
    assert _Strict.seen == [{"w": np.dtype(np.int64)}]
    # a strategy without a certificate (the default, empty schema) takes none
    with pytest.raises(CertificateRejected, match="'extra' is not part of"):
        registry.strategy("majority", "enumerate").prove(
            model, certificate=Certificate("enumerate", model_hash(model), {"extra": np.ones(1)}))
