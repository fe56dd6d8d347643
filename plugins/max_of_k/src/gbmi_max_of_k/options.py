"""The option axes of the subcubic family and their names (no torch here: listing must stay fast)."""

from __future__ import annotations

import itertools

import attrs

EUPU_HANDLINGS = ("global_max_diff_exact", "max_diff_exact", "mean_query+max_diff", "svd_query+max_diff", "max_diff")
ATTENTION_HANDLINGS = ("mean_query+diff", "drop_average_query_per_output_logit_reasoning")
ERROR_HANDLINGS = (
    "svd", "max_diff", "mean+max_diff", "max_diff_exact", "exact_EQKE+max_diff_exact", "max_diff_subproduct",
    "mean+max_diff_subproduct", "max_diff_subproduct_recursive", "mean+max_diff_subproduct_recursive",
    "mean_recursive+max_diff_subproduct_recursive",
)
_QUADRATIC_EUPU = {"mean_query+max_diff", "svd_query+max_diff", "max_diff"}
_RECURSIVE = {e for e in ERROR_HANDLINGS if e.endswith("_recursive")}
_VOCAB_MODEL_SQUARED = {"svd", "max_diff", "mean+max_diff", "max_diff_subproduct", "mean+max_diff_subproduct"}


def _dash(value: str) -> str:
    return value.replace("_", "-")


#: Abbreviations of the axis values for short names (tables 120 columns wide): ``sub:<eupu>/<attn>/<err>``.
SHORT = {
    "global_max_diff_exact": "gmdx", "max_diff_exact": "mdx", "mean_query+max_diff": "mq+md",
    "svd_query+max_diff": "svdq+md", "max_diff": "md", "mean_query+diff": "mean", "svd": "svd",
    "drop_average_query_per_output_logit_reasoning": "drop", "mean+max_diff": "mean+md",
    "exact_EQKE+max_diff_exact": "exact+mdx", "max_diff_subproduct": "sub", "mean+max_diff_subproduct": "mean+sub",
    "max_diff_subproduct_recursive": "rec", "mean+max_diff_subproduct_recursive": "mean+rec",
    "mean_recursive+max_diff_subproduct_recursive": "meanrec+rec",
}


@attrs.frozen
class SubcubicOptions:
    """One point of the subcubic family.  ``name`` is its strategy name.

    Names are ``subcubic--eupu-<EUPU>--attn-<attention>--err-<attention error>``, each value as listed in
    ``EUPU_HANDLINGS``, ``ATTENTION_HANDLINGS`` and ``ERROR_HANDLINGS`` with ``_`` written ``-``.  Build your
    own combination with ``SubcubicOptions(eupu=..., attention=..., attention_error=...)`` and run it with
    ``gbmi_max_of_k.subcubic.search`` / ``verify``, or look it up by ``options.name`` in the registry.
    """

    eupu: str = attrs.field(default="mean_query+max_diff", validator=attrs.validators.in_(EUPU_HANDLINGS))
    attention: str = attrs.field(default="mean_query+diff", validator=attrs.validators.in_(ATTENTION_HANDLINGS))
    attention_error: str = attrs.field(default="max_diff", validator=attrs.validators.in_(ERROR_HANDLINGS))

    @property
    def name(self) -> str:
        return f"subcubic--eupu-{_dash(self.eupu)}--attn-{_dash(self.attention)}--err-{_dash(self.attention_error)}"

    @property
    def short_name(self) -> str:
        """``sub:<eupu>/<attn>/<err>`` with the abbreviations of :data:`SHORT` (``gbmi prove --wide``: full)."""
        return f"sub:{SHORT[self.eupu]}/{SHORT[self.attention]}/{SHORT[self.attention_error]}"

    @property
    def family(self) -> str:
        """The reference's leading-complexity class."""
        if self.eupu in _QUADRATIC_EUPU and self.attention_error in _RECURSIVE:
            return "subcubic:almost-quadratic"
        if self.eupu in _QUADRATIC_EUPU and self.attention_error in _VOCAB_MODEL_SQUARED:
            return "subcubic:without-vocab-squared"
        return "subcubic"

    @property
    def complexity(self) -> str:
        extra = []
        if self.eupu not in _QUADRATIC_EUPU or self.attention_error in {"max_diff_exact", "exact_EQKE+max_diff_exact"}:
            extra.append("V^2 D (EUPU/EQKE)")
        elif self.attention_error in _VOCAB_MODEL_SQUARED:
            extra.append("V D^2")
        return "O(V^2 D + V^2 K^2" + "".join(f" + {e}" for e in extra) + ")"

    def summary(self) -> str:
        return (f"Subcubic proof: direct path by {self.eupu}, attention by {self.attention}, "
                f"EQKE error by {self.attention_error}.")

    def unexplained_dimension(self, V: int, D: int) -> int:
        """Reference §7.2: ed(EUPU) + ed(EQKE error) + V (PVOU) + V^2 (EVOU)."""
        eupu = {"global_max_diff_exact": 2, "max_diff_exact": 2 * V, "mean_query+max_diff": V + V * D + 2,
                "svd_query+max_diff": V + V * D + 2, "max_diff": V * D + 2}[self.eupu]
        if self.attention_error == "svd":
            err = 2 * V
        elif self.attention_error == "max_diff_exact":
            err = 4 * V
        elif self.attention_error == "exact_EQKE+max_diff_exact":
            err = V * V
        else:
            err = 2 * V + (V if self.attention_error.startswith("mean") else 0) + 2 * D
        return eupu + err + V + V * V


ALL_OPTIONS = tuple(SubcubicOptions(e, a, r) for e, a, r in
                    itertools.product(EUPU_HANDLINGS, ATTENTION_HANDLINGS, ERROR_HANDLINGS))


#: 2: binary search per cell, and the attention split point ā in the certificate (version 1 had neither).
SEARCH_VERSION = "2"


def certificate_schema():
    """A subcubic certificate: the min-gap table (signed integers in ``[1, V]``), the seven directions (finite
    floats; vocabulary- or residual-sized: ``d_path`` is ``d_model``, one more for a model with biases) and, for ``mean_query+diff``, the split points ``ā[m, c]`` in ``[0, 1]``."""
    from gbmi_core.schema import ArrayField, CertificateSchema

    vocab = ArrayField("float", ("d_vocab",))
    model = ArrayField("float", ("d_path",))
    return CertificateSchema({
        "min_gap": ArrayField("int", ("d_vocab", "d_vocab", "n_ctx"), low=1, high="d_vocab"),
        "mean_attention": ArrayField("float", ("d_vocab", "n_ctx"), low=0.0, high=1.0, required=False),
        **{name: vocab for name in ("query_direction", "key_direction", "second_query_direction",
                                    "second_key_direction")},
        **{name: model for name in ("W_Q_direction", "W_K_direction", "W_EP_direction")},
    })


def path_dimensions(model) -> dict:
    """``d_path``: the width of the residual stream the proofs see (``d_model``, plus the constant direction
    biases are folded into, see :func:`gbmi_max_of_k.model.paths`)."""
    from gbmi_core.attention import attention_only_weights

    return {"d_path": model.cfg.d_model + attention_only_weights(model).has_biases()}


def strategy_specs(task: str, search, verify) -> list:
    """One :class:`~gbmi_core.StrategySpec` per option combination, with lazy ``search``/``verify``."""
    from gbmi_core import StrategySpec

    schema = certificate_schema()

    return [
        StrategySpec(
            task=task, name=options.name, summary=options.summary(), complexity=options.complexity,
            search=lambda model, o=options: search(model, o),
            verify=lambda model, certificate, o=options: verify(model, certificate, o),
            unexplained_dimension=lambda model, o=options: o.unexplained_dimension(model.cfg.d_vocab,
                                                                                   model.cfg.d_model),
            family=options.family,
            options=attrs.asdict(options),
            short_name=options.short_name,
            search_version=SEARCH_VERSION,
            certificate=schema,
            dimensions=path_dimensions,
        )
        for options in ALL_OPTIONS
    ]
