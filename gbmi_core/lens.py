"""TransformerLens 3.9 and 4.x behind one small adapter: the only module of gbmi that knows which is installed.

TransformerLens 4 removed ``HookedTransformer``; models are ``TransformerBridge`` modules whose state-dict
names and layouts differ (``blocks.0.attn.q.weight [heads*d_head, d_model]`` where 3.x has
``blocks.0.attn.W_Q [heads, d_model, d_head]``), whose config does not say the attention scale truthfully
(``use_attn_scale=False`` is ignored, ``attn_scale=1.0`` raises), and whose initialisation differs.  Everything
gbmi keeps or computes goes through the **canonical form** defined here, which is the same under both:

* :func:`canonical_state` - the weights under TransformerLens 3.x names and shapes (the layout of every
  store entry, model file and proof bundle), from a ``HookedTransformer``, a ``TransformerBridge``, or a
  state dict in either layout (:func:`to_canonical`);
* :func:`architecture` - the config fields that say what the model computes (:data:`FIELDS`), with the
  attention scale read from the attention layers themselves, never from a config that may not apply it;
* :func:`build` - a model of the installed version (``HookedTransformer`` on 3.x, ``TransformerBridge`` on
  4.x) from an architecture, holding given weights or **gbmi's own** deterministic initialisation
  (:func:`initial_state`), so a config and a seed give the same weights, hash and proofs under both;
* :class:`Weights` - canonical tensors with the stacked accessors a forward pass wants (``W_E``, ``W_Q``
  ``[layer, head, d_model, d_head]``, ``attn_scale[layer]``, ...); training and proofs compute on these.

Plugins use these functions and never ask which version is installed.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import GbmiError, ModelRefused

#: The architecture fields gbmi records for a model (the ones that change what it computes, plus a few
#: TransformerLens 3.x records that do not, kept at 3.x's defaults so hashes stay those of 3.x).
FIELDS = (
    "n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_vocab_out", "attn_only", "act_fn", "d_mlp",
    "normalization_type", "positional_embedding_type", "use_attn_scale", "attn_scale", "final_rms",
    "original_architecture", "default_prepend_bos", "tokenizer_prepends_bos", "parallel_attn_mlp",
    "gated_mlp", "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_local_attn",
    "use_qk_norm", "rotary_dim", "n_key_value_heads", "output_logits_soft_cap", "attn_scores_soft_cap",
    "scale_attn_by_inverse_layer_idx",
)

#: Fields that only name hooks or tokenizer habits: recorded at these values whatever the model says.
_COSMETIC = {"original_architecture": None, "default_prepend_bos": True, "tokenizer_prepends_bos": None,
             "use_attn_result": False, "use_split_qkv_input": False, "use_hook_mlp_in": False}

#: Defaults of the computing fields, as TransformerLens 3.x fills them.
_DEFAULTS = {"attn_only": False, "act_fn": "relu", "normalization_type": "LN", "positional_embedding_type": "standard",
             "final_rms": False, "parallel_attn_mlp": False, "gated_mlp": False, "use_local_attn": False,
             "use_qk_norm": False, "rotary_dim": None, "n_key_value_heads": None, "output_logits_soft_cap": -1.0,
             "attn_scores_soft_cap": -1.0, "scale_attn_by_inverse_layer_idx": False}

_NORMALISATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")


class LensError(GbmiError, ValueError):
    """A model or state dict TransformerLens (of the installed version) cannot give gbmi."""


@functools.cache
def version() -> tuple[int, int]:
    """The installed TransformerLens ``(major, minor)``, read from package metadata (importing it is slow)."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        text = dist_version("transformer-lens")
    except PackageNotFoundError:
        raise LensError("TransformerLens is not installed (pip install 'transformer-lens>=3.9,<5')") from None
    major, minor = (int(part) for part in re.findall(r"\d+", text)[:2])
    return major, minor


def kind(model: Any) -> str | None:
    """``"hooked"`` for a ``HookedTransformer``, ``"bridge"`` for a ``TransformerBridge``, else ``None``."""
    cls = type(model)
    if not cls.__module__.startswith("transformer_lens"):
        return None
    return {"HookedTransformer": "hooked", "TransformerBridge": "bridge"}.get(cls.__name__)


def describe() -> str:
    major, minor = version()
    return f"TransformerLens {major}.{minor} ({'HookedTransformer' if major < 4 else 'TransformerBridge'})"


# --------------------------------------------------------------------------------------------- architecture

def normalise(fields: Mapping[str, Any]) -> dict:
    """The canonical architecture: :data:`FIELDS` only, defaults filled, cosmetic fields fixed, and the
    attention scale as the number scores are divided by (``use_attn_scale`` true)."""
    missing = [name for name in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab") if fields.get(name) is None]
    if missing:
        raise LensError(f"the architecture does not give {', '.join(missing)}")
    out = {name: fields.get(name, _DEFAULTS.get(name)) for name in FIELDS}
    for name in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab"):
        out[name] = _positive_int(name, out[name])
    out["d_vocab_out"] = _positive_int("d_vocab_out", out["d_vocab_out"]) if out["d_vocab_out"] not in (None, -1) \
        else out["d_vocab"]
    out.update(_COSMETIC)
    out["attn_only"] = bool(out["attn_only"])
    if out["attn_only"]:  # no MLP: its width and activation are moot (recorded as 3.x records them)
        out["d_mlp"], out["act_fn"] = 4 * out["d_model"], None
    elif out["d_mlp"] in (None, -1):
        out["d_mlp"] = 4 * out["d_model"]
    if out["normalization_type"] not in _NORMALISATIONS:
        raise LensError(f"normalization_type {out['normalization_type']!r} is not one of {_NORMALISATIONS}")
    for name in ("output_logits_soft_cap", "attn_scores_soft_cap"):
        out[name] = float(out[name]) if out[name] is not None and float(out[name]) > 0 else -1.0
    if out["n_key_value_heads"] in (None, out["n_heads"]):
        out["n_key_value_heads"] = None
    # 3.x divides scores by attn_scale only when use_attn_scale is set (its default is sqrt(d_head)).
    use = fields.get("use_attn_scale", True)
    scale = fields.get("attn_scale")
    scale = math.sqrt(out["d_head"]) if scale is None or (isinstance(scale, (int, float)) and scale < 0) else scale
    out["attn_scale"], out["use_attn_scale"] = (float(scale) if use else 1.0), True
    if not math.isfinite(out["attn_scale"]) or out["attn_scale"] <= 0:
        raise LensError(f"attention scale {out['attn_scale']} is not a positive number")
    for name in ("final_rms", "parallel_attn_mlp", "gated_mlp", "use_local_attn", "use_qk_norm",
                 "scale_attn_by_inverse_layer_idx"):
        out[name] = bool(out[name])
    if out["normalization_type"] is not None:  # recorded only where it computes: other hashes do not move
        eps = fields.get("eps", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise LensError(f"LayerNorm eps {eps!r} is not a nonnegative number")
        out["eps"] = float(eps)
    return out


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LensError(f"architecture field {name} must be a positive integer, not {value!r}")
    return int(value)


def layer_scales(arch: Mapping[str, Any]) -> list[float]:
    """The number each layer divides its attention scores by."""
    step = arch.get("scale_attn_by_inverse_layer_idx", False)
    return [arch["attn_scale"] * ((layer + 1) if step else 1) for layer in range(arch["n_layers"])]


def architecture(model: Any) -> dict:
    """The canonical architecture of a TransformerLens model (:func:`normalise`), its attention scale read
    from its attention layers."""
    which = kind(model)
    if which is None:
        raise ModelRefused(f"gbmi takes a TransformerLens HookedTransformer or TransformerBridge, "
                           f"not a {type(model).__name__}")
    cfg = model.cfg
    raw = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    fields = {name: raw.get(name) for name in FIELDS + ("eps",) if name in raw}
    if which == "hooked":
        scales = [float(block.attn.attn_scale) for block in model.blocks]  # layer factor included
    else:
        scales = [float(block.attn.original_component.scale) for block in model.blocks]
    fields["use_attn_scale"] = True
    fields["scale_attn_by_inverse_layer_idx"] = False
    fields["attn_scale"] = scales[0] if scales else None
    if len(scales) > 1 and any(s != scales[0] for s in scales):
        if all(s == scales[0] * (layer + 1) for layer, s in enumerate(scales)):
            fields["scale_attn_by_inverse_layer_idx"] = True
        else:
            raise ModelRefused(f"its layers divide attention scores by different numbers {scales}, which gbmi "
                               f"cannot record (one attn_scale, optionally times the layer number)")
    return normalise(fields)


# ------------------------------------------------------------------------------------------------- weights

def parameter_names(arch: Mapping[str, Any]) -> list[str]:
    """The canonical parameter names of an architecture, in TransformerLens 3.x's order (the order gbmi's
    initialisation draws them in)."""
    names = ["embed.W_E"] + (["pos_embed.W_pos"] if arch["positional_embedding_type"] in ("standard", "shortformer")
                              else [])
    norm = arch["normalization_type"]
    norms = {"LN": ("w", "b"), "RMS": ("w",)}.get(norm, ())
    for layer in range(arch["n_layers"]):
        prefix = f"blocks.{layer}."
        names += [prefix + f"ln1.{p}" for p in norms]
        if not arch["attn_only"]:
            names += [prefix + f"ln2.{p}" for p in norms]
        names += [prefix + f"attn.{p}" for p in ("W_Q", "W_O", "b_Q", "b_O", "W_K", "W_V", "b_K", "b_V")]
        if not arch["attn_only"]:
            names += [prefix + f"mlp.{p}" for p in ("W_in", "b_in", "W_out", "b_out")]
    if norm in ("LN", "RMS"):
        names += [f"ln_final.{p}" for p in norms]
    names += ["unembed.W_U", "unembed.b_U"]
    return names


def shapes(arch: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Canonical parameter name -> shape."""
    D, h, H, V, n = arch["d_model"], arch["n_heads"], arch["d_head"], arch["d_vocab"], arch["n_ctx"]
    M, V_out = arch["d_mlp"], arch["d_vocab_out"]
    by_leaf = {"W_E": (V, D), "W_pos": (n, D), "W_Q": (h, D, H), "W_K": (h, D, H), "W_V": (h, D, H), "W_O": (h, H, D),
               "b_Q": (h, H), "b_K": (h, H), "b_V": (h, H), "b_O": (D,), "W_in": (D, M), "b_in": (M,),
               "W_out": (M, D), "b_out": (D,), "w": (D,), "b": (D,), "W_U": (D, V_out), "b_U": (V_out,)}
    return {name: by_leaf[name.rsplit(".", 1)[1]] for name in parameter_names(arch)}


def _buffers(arch: Mapping[str, Any]) -> dict[str, Any]:
    """The two attention buffers TransformerLens 3.9 keeps in a state dict (an empty causal-mask cache and
    the masking value): part of the canonical form so that stored weights and hashes stay 3.9's."""
    import torch

    out = {}
    for layer in range(arch["n_layers"]):
        out[f"blocks.{layer}.attn.mask"] = torch.zeros((0, 0), dtype=torch.bool)
        out[f"blocks.{layer}.attn.IGNORE"] = torch.tensor(float("-inf"), dtype=torch.float32)
    return out


def initial_state(arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """gbmi's initialisation, the same under every TransformerLens version: each ``W_*`` matrix, in 3.x's
    parameter order, drawn from ``N(0, (0.8/sqrt(d_model))^2)`` by one generator seeded with ``seed``;
    biases 0, norm weights 1.  It equals what TransformerLens 3.9 draws for ``seed`` (its "gpt2" init), so
    models trained before the adapter retrain bit for bit."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    std = float(0.8 / np.sqrt(arch["d_model"]))
    state = {}
    for name, shape in shapes(arch).items():
        leaf = name.rsplit(".", 1)[1]
        tensor = torch.empty(shape, dtype=torch.float32)
        if leaf.startswith("W_"):
            tensor.normal_(0.0, std, generator=generator)
        elif leaf == "w":
            tensor.fill_(1.0)
        else:
            tensor.zero_()
        state[name] = tensor
    state.update(_buffers(arch))
    return state


def _bridge_layout(name: str, h: int, H: int) -> tuple[str, Any, Any] | None:
    """``(bridge name, canonical -> bridge, bridge -> canonical)`` for one canonical parameter."""
    match = re.fullmatch(r"(blocks\.\d+\.)(attn|mlp|ln1|ln2)\.(\w+)|(ln_final)\.(w|b)|(embed\.W_E|pos_embed\.W_pos|"
                         r"unembed\.W_U|unembed\.b_U)", name)
    if match is None:
        return None
    same = (lambda t: t, lambda t: t)
    if match.group(6):
        return {"embed.W_E": ("embed.weight", *same), "pos_embed.W_pos": ("pos_embed.weight", *same),
                "unembed.W_U": ("unembed.weight", lambda t: t.T, lambda t: _dense(t.T)),
                "unembed.b_U": ("unembed.bias", *same)}[match.group(6)]
    if match.group(4):
        return f"ln_final.{'weight' if match.group(5) == 'w' else 'bias'}", *same
    prefix, part, leaf = match.group(1), match.group(2), match.group(3)
    if part in ("ln1", "ln2"):
        return f"{prefix}{part}.{'weight' if leaf == 'w' else 'bias'}", *same
    if part == "mlp":
        return {"W_in": (f"{prefix}mlp.in.weight", lambda t: t.T, lambda t: _dense(t.T)),
                "b_in": (f"{prefix}mlp.in.bias", *same),
                "W_out": (f"{prefix}mlp.out.weight", lambda t: t.T, lambda t: _dense(t.T)),
                "b_out": (f"{prefix}mlp.out.bias", *same)}.get(leaf)
    if leaf in ("W_Q", "W_K", "W_V"):  # [h, D, H] <-> Linear weight [h*H, D]
        return (f"{prefix}attn.{leaf[-1].lower()}.weight",
                lambda t: t.permute(0, 2, 1).reshape(h * H, -1),
                lambda t: _dense(t.reshape(h, H, -1).permute(0, 2, 1)))
    if leaf in ("b_Q", "b_K", "b_V"):
        return f"{prefix}attn.{leaf[-1].lower()}.bias", lambda t: t.reshape(-1), lambda t: t.reshape(h, H)
    if leaf == "W_O":  # [h, H, D] <-> Linear weight [D, h*H]
        return f"{prefix}attn.o.weight", lambda t: t.reshape(h * H, -1).T, lambda t: _dense(t.T).reshape(h, H, -1)
    if leaf == "b_O":
        return f"{prefix}attn.o.bias", *same
    return None


def _dense(tensor):
    """A contiguous copy (or the tensor itself) made by a dtype-preserving ``to``, which the FLOP counter
    rates as free data movement: moving weights between layouts is not part of any proof, so verification
    FLOPs are the same under every TransformerLens version."""
    import torch

    if tensor.is_contiguous():
        return tensor
    return tensor.to(tensor.dtype, copy=True, memory_format=torch.contiguous_format)


def is_bridge_layout(state: Mapping[str, Any]) -> bool:
    """Whether a state dict uses TransformerLens 4's bridge names (``embed.weight``, ``blocks.0.attn.q.weight``)."""
    return "embed.weight" in state and "embed.W_E" not in state


def to_canonical(state: Mapping[str, Any], arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A state dict in either layout, as canonical tensors (3.x names and shapes; 3.9's two attention
    buffers added).  A bridge-layout dict needs ``arch`` (for ``n_heads`` and ``d_head``)."""
    import torch

    if not is_bridge_layout(state):
        out = {name: value for name, value in state.items()}
        for name, value in (_buffers(arch) if arch else {}).items():
            out.setdefault(name, value)
        return out
    if arch is None:
        raise LensError("a TransformerLens 4 (bridge) state dict needs its config (n_heads, d_head)")
    h, H = arch["n_heads"], arch["d_head"]
    out, used = {}, set()
    for name in shapes(arch):
        bridge, _, back = _bridge_layout(name, h, H)
        if bridge in state:
            out[name] = _dense(back(torch.as_tensor(state[bridge])))
            used.add(bridge)
    extra = sorted(set(state) - used - {k for k in state if k.endswith("causal_mask")})
    if extra:
        out.update({name: state[name] for name in extra})  # reported as unexpected by :func:`check_state`
    out.update(_buffers(arch))
    return out


def check_state(arch: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Raise :class:`ModelRefused` unless ``state`` holds exactly the canonical parameters of ``arch``,
    with the right shapes, as floating-point tensors (the 3.9 buffers are optional)."""
    expected = shapes(arch)
    buffers = _buffers(arch)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - set(buffers))
    wrong = [f"{name} {tuple(state[name].shape)} (expected {expected[name]})"
             for name in sorted(set(state) & set(expected)) if tuple(state[name].shape) != expected[name]]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
    if wrong:
        problems.append(f"wrong shapes: {', '.join(wrong[:4])}")
    if problems:
        raise ModelRefused(f"the weights do not fit the architecture: {'; '.join(problems)}")
    for name in expected:
        if not state[name].dtype.is_floating_point:
            raise ModelRefused(f"weight {name} has dtype {state[name].dtype}, not a floating-point type")


def canonical_state(model: Any, arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A TransformerLens model's weights in the canonical form (detached; buffers of 3.9 included).
    ``arch`` is the model's :func:`architecture`, for a caller that has it already."""
    arch = architecture(model) if arch is None else arch  # refuses anything but a TransformerLens model
    state = {name: value.detach() for name, value in model.state_dict().items()}
    if kind(model) == "hooked":
        out = {name: state[name] for name in shapes(arch) if name in state}
        out.update(_buffers(arch))
        return out
    return to_canonical(state, arch)


def _targets(model: Any, arch: Mapping[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """``(canonical name, the model's parameter, canonical -> its layout)`` for each canonical parameter."""
    clean = model.state_dict(keep_vars=True)  # the parameters themselves, under the state-dict names
    if kind(model) == "hooked":
        for name in shapes(arch):
            yield name, clean[name], lambda t: t
        return
    for name in shapes(arch):
        bridge, forward, _ = _bridge_layout(name, arch["n_heads"], arch["d_head"])
        if bridge not in clean:
            raise LensError(f"this TransformerBridge has no {bridge} (for {name})")
        yield name, clean[bridge], forward


def load_state(model: Any, state: Mapping[str, Any]) -> Any:
    """Write canonical weights into a TransformerLens model, in place; returns the model."""
    import torch

    arch = architecture(model)
    check_state(arch, state)
    with torch.no_grad():
        for name, target, forward in _targets(model, arch):
            value = forward(torch.as_tensor(state[name]))
            if tuple(value.shape) != tuple(target.shape):
                raise LensError(f"{name}: shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
            target.copy_(value.to(target.dtype))
    return model


@contextlib.contextmanager
def editing(model: Any) -> Iterator[dict[str, Any]]:
    """Edit a model's weights in the canonical layout, whatever the version (a bridge's ``W_Q`` is a
    computed view, so editing it in place may change nothing)::

        with lens.editing(model) as w:
            w["blocks.0.attn.W_Q"].mul_(2.0)
    """
    import torch

    with torch.no_grad():
        state = {name: value.clone() for name, value in canonical_state(model).items()}
        yield state
    load_state(model, state)


def trainable(model: Any) -> set[str]:
    """The canonical names of the parameters of ``model`` that have ``requires_grad``."""
    return {name for name, target, _ in _targets(model, architecture(model)) if target.requires_grad}


def freeze(model: Any, names) -> None:
    """Set ``requires_grad`` off on the model's parameters with these canonical names."""
    wanted = set(names)
    for name, target, _ in _targets(model, architecture(model)):
        if name in wanted:
            target.requires_grad_(False)


def build(arch: Mapping[str, Any], *, seed: int | None = None, state: Mapping[str, Any] | None = None) -> Any:
    """A model of the installed TransformerLens for ``arch`` (a ``HookedTransformer`` on 3.x, a
    ``TransformerBridge`` built with ``boot_native`` on 4.x), on the CPU in float32, holding ``state``
    (canonical) or, with ``seed``, :func:`initial_state`.  Building does not touch torch's global RNG."""
    import torch

    arch = normalise(arch)
    if state is None:
        state = initial_state(arch, 0 if seed is None else seed)
    else:
        check_state(arch, state)
    cfg = {name: value for name, value in arch.items() if name not in _COSMETIC}
    scales = layer_scales(arch)
    with torch.random.fork_rng(devices=[]):
        try:
            if version()[0] < 4:
                from transformer_lens import HookedTransformer, HookedTransformerConfig

                model = HookedTransformer(HookedTransformerConfig(device="cpu", init_weights=False, **cfg),
                                          move_to_device=False)
            else:
                from transformer_lens.model_bridge import TransformerBridge

                for name in ("use_attn_scale", "attn_scale", "scale_attn_by_inverse_layer_idx"):
                    cfg.pop(name)
                model = TransformerBridge.boot_native(cfg, device="cpu", dtype=torch.float32)
                for block, scale in zip(model.blocks, scales):
                    block.attn.original_component.scale = scale
        except (LensError, ModelRefused):
            raise
        except Exception as error:  # noqa: BLE001 - TransformerLens validates configs in many ways
            raise LensError(f"{describe()} cannot build this architecture: {type(error).__name__}: "
                            f"{_first_line(error)}") from None
    got = architecture(model)
    if got != arch:
        changed = sorted(name for name in arch if got.get(name) != arch[name])
        raise LensError(f"{describe()} built a model that differs from the architecture asked for in "
                        f"{', '.join(changed)}")
    return load_state(model, state)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""


class Weights(Mapping):
    """Canonical weights as tensors, by name, with the stacked accessors of a ``HookedTransformer``:
    ``W_E``, ``W_pos``, ``W_U``, ``b_U`` and ``W_Q``/``W_K``/``W_V``/``W_O``/``b_*`` stacked over layers
    (``[layer, head, ...]``), ``attn_scale[layer]``, and ``arch``.  Training computes on these (leaf tensors
    of its own), proofs read them; neither depends on the TransformerLens version."""

    def __init__(self, state: Mapping[str, Any], arch: Mapping[str, Any]):
        self.state, self.arch = dict(state), dict(arch)
        self.attn_scale = layer_scales(arch)

    @classmethod
    def of(cls, model: Any) -> "Weights":
        arch = architecture(model)
        return cls(canonical_state(model, arch), arch)

    def __getitem__(self, name: str):
        return self.state[name]

    def __iter__(self):
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)

    def _stack(self, part: str, leaf: str):
        import torch

        return torch.stack([self.state[f"blocks.{layer}.{part}.{leaf}"] for layer in range(self.arch["n_layers"])])

    W_E = property(lambda self: self.state["embed.W_E"])
    W_pos = property(lambda self: self.state["pos_embed.W_pos"])
    W_U = property(lambda self: self.state["unembed.W_U"])
    b_U = property(lambda self: self.state["unembed.b_U"])
    W_Q = property(lambda self: self._stack("attn", "W_Q"))
    W_K = property(lambda self: self._stack("attn", "W_K"))
    W_V = property(lambda self: self._stack("attn", "W_V"))
    W_O = property(lambda self: self._stack("attn", "W_O"))
    b_Q = property(lambda self: self._stack("attn", "b_Q"))
    b_K = property(lambda self: self._stack("attn", "b_K"))
    b_V = property(lambda self: self._stack("attn", "b_V"))
    b_O = property(lambda self: self._stack("attn", "b_O"))


__all__ = ["FIELDS", "LensError", "Weights", "architecture", "build", "canonical_state", "check_state", "describe",
           "editing",
           "freeze", "initial_state", "is_bridge_layout", "kind", "layer_scales", "load_state", "normalise",
           "parameter_names", "shapes", "to_canonical", "trainable", "version"]
