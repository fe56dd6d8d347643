"""The typed, frozen records that hooks return and that the core hands back.

Nothing here imports torch: listing what is registered must stay fast.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs


def _check_name(instance, attribute, value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be a non-empty string, got {value!r}")
    if any(ch.isspace() for ch in value):
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must not contain whitespace: {value!r}")


def _check_summary(instance, attribute, value):
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be one non-empty line, got {value!r}")


@attrs.frozen
class TaskSpec:
    """A task: what the inputs are, what the right answer is, and how its model is built.

    ``config_type`` is an attrs class (see :mod:`gbmi_core.config`); ``presets`` maps a preset name to a
    dict of field overrides applied to the default config.  ``build_model(config)`` returns a fresh,
    untrained model.  ``check_model(model, config_or_None)`` raises :class:`gbmi_core.errors.ModelRefused`
    naming the reason when a model cannot be handled by the task's strategies.  ``input_space`` is a
    one-line human description (e.g. ``"[0, V)^K"``); ``label(inputs)`` computes the correct answers for a
    batch of inputs.  ``reference_models`` maps a config content hash to a path (or callable returning a
    path) of a shipped model file the store can import, so that demos and tests need no training.
    ``reference_strategy`` names the strategy that computes the exact accuracy (reports normalise by it).
    """

    name: str = attrs.field(validator=_check_name)
    summary: str = attrs.field(validator=_check_summary)
    config_type: type
    build_model: Callable[[Any], Any]
    input_space: str = ""
    label: Callable[[Any], Any] | None = None
    check_model: Callable[[Any], None] | None = None
    presets: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=lambda d: dict(d))
    config_from_model: Callable[[Any], Any] | None = None
    reference_models: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda d: dict(d))
    reference_strategy: str | None = None


@attrs.frozen
class ModelSpec:
    """An architecture a task can use: ``build(config)`` returns an untrained model."""

    task: str = attrs.field(validator=_check_name)
    name: str = attrs.field(validator=_check_name)
    summary: str = attrs.field(validator=_check_summary)
    build: Callable[[Any], Any]


@attrs.frozen
class TrainedModel:
    """What a trainer returns: the model, and metrics (a JSON-able dict) about its training."""

    model: Any
    metrics: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda d: dict(d))


@attrs.frozen
class TrainerSpec:
    """How a task's model is trained: ``train(config, progress=True) -> TrainedModel``."""

    task: str = attrs.field(validator=_check_name)
    name: str = attrs.field(validator=_check_name)
    summary: str = attrs.field(validator=_check_summary)
    train: Callable[..., TrainedModel]


@attrs.frozen
class Certificate:
    """What proof search hands to verification.

    ``arrays`` holds numpy arrays (what the Zarr store keeps as arrays); ``attrs`` holds JSON-able metadata.
    ``model_hash`` ties the certificate to one model: verification refuses a certificate made for another.
    """

    strategy: str
    model_hash: str
    arrays: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda d: dict(d))
    attrs: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda d: dict(d))


@attrs.frozen
class Bound:
    """What verification returns: an exact count of inputs proved correct out of ``total_count``.

    ``extra`` carries strategy-specific JSON-able numbers (e.g. the exact loss for brute force).
    ``certified`` says that every decision behind the count was made with rounding accounted for, so the
    count is a lower bound on the inputs correct in exact arithmetic (``docs/certified.md``); a strategy
    that decides in plain floating point leaves it ``False``.
    """

    correct_count: int = attrs.field(converter=int)
    total_count: int = attrs.field(converter=int)
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda d: dict(d))
    certified: bool = attrs.field(default=False, converter=bool)

    def __attrs_post_init__(self):
        if not 0 <= self.correct_count <= self.total_count:
            raise ValueError(f"correct_count {self.correct_count} is outside [0, {self.total_count}]")


def _no_search(model, **_):
    return {}


def _empty_schema():
    from .schema import CertificateSchema

    return CertificateSchema()


@attrs.frozen
class StrategySpec:
    """A proof strategy of one task.

    The contract is split in two:

    * ``search(model) -> dict`` is free (not counted in proof length).  Whatever it returns (a dict of
      numpy arrays and JSON-able scalars) becomes the arrays/attrs of a :class:`Certificate`.
    * ``verify(model, certificate) -> Bound`` is the proof.  It is run under the FLOP counter; its count is
      the proof length.  It must be sound for *any* certificate: a wrong certificate may only lower the
      bound (or be refused with :class:`gbmi_core.errors.CertificateRejected`).

    ``complexity`` is the asymptotic cost as a short string (``"O(V^3 K^2)"``); ``short_name`` is what
    tables show by default; ``search_version`` tells cached certificates of an older search apart;
    ``unexplained_dimension(model) -> int`` is the parameter-count estimate of what the proof leaves
    unexplained; ``certificate`` (a :class:`~gbmi_core.schema.CertificateSchema`) declares what search may
    hand to verification; ``dimensions(model) -> dict`` names sizes the schema may use beyond the
    model's TransformerLens config (``d_vocab``, ``d_model``, ...).
    """

    task: str = attrs.field(validator=_check_name)
    name: str = attrs.field(validator=_check_name)
    summary: str = attrs.field(validator=_check_summary)
    complexity: str
    verify: Callable[..., Bound]
    search: Callable[..., Mapping[str, Any]] = _no_search
    unexplained_dimension: Callable[[Any], int] | None = None
    family: str = ""
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda d: dict(d))
    short_name: str = attrs.field(default="", validator=lambda i, a, v: v == "" or _check_short(i, a, v))
    #: Change it when search improves: certificates cached by another version are searched anew (any
    #: certificate is sound, so old ones were not wrong, only possibly weaker).
    search_version: str = ""
    #: What the certificate may hold (:mod:`gbmi_core.schema`); the core refuses anything else before
    #: ``verify`` sees it.  The default holds nothing: a strategy without a certificate.
    certificate: Any = attrs.field(factory=lambda: _empty_schema())
    #: ``model -> {name: size}``: sizes the certificate schema may name beyond the model's config.
    dimensions: Callable[[Any], Mapping[str, int]] | None = None

    @property
    def display_name(self) -> str:
        """The name tables show by default: ``short_name`` when given, else ``name``."""
        return self.short_name or self.name


SHORT_NAME_LIMIT = 40


def _check_short(instance, attribute, value):
    _check_name(instance, attribute, value)
    if len(value) > SHORT_NAME_LIMIT:
        raise ValueError(f"{type(instance).__name__}.short_name must be at most {SHORT_NAME_LIMIT} characters, "
                         f"got {value!r}")


@attrs.frozen
class FigureSpec:
    """A picture of a task's model: ``draw(model, strategy=None) -> matplotlib.figure.Figure``.

    ``needs_strategy``: the figure is about one proof (it gets the :class:`~gbmi_core.Strategy`)."""

    task: str = attrs.field(validator=_check_name)
    name: str = attrs.field(validator=_check_name)
    summary: str = attrs.field(validator=_check_summary)
    draw: Callable[..., Any]
    needs_strategy: bool = False


@attrs.frozen
class ProofResult:
    """The outcome of one proof on one model.  ``certified``: the bound holds under floating-point rounding."""

    task: str
    strategy: str
    model_hash: str
    accuracy_lower_bound: float
    correct_count: int
    total_count: int
    flops: int
    unexplained_dimension: int | None
    seconds: float
    search_seconds: float = 0.0
    verify_seconds: float = 0.0
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda d: dict(d))
    certified: bool = False

    def to_dict(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProofResult":
        return cls(**data)
