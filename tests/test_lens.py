"""The TransformerLens adapter: one canonical form of weights and architecture under 3.x and 4.x.

Most tests run under whichever version is installed (CI runs the suite under both); a few compare with
the installed version's own code and say which version they need."""

import math

import pytest
import torch

from gbmi_core import ModelRefused, lens
from gbmi_core.models import model_hash

pytest.importorskip("transformer_lens")

TL4 = lens.version()[0] >= 4
SMALL = dict(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=7, d_vocab_out=7, n_ctx=5, attn_only=True,
             normalization_type=None, act_fn=None)


def reference_logits(state, arch, tokens):
    """A float64 forward pass written from the canonical weights alone (attention, optional LayerNorm and
    ReLU MLP), to check that a built model computes what its canonical weights say."""
    s = {k: v.double() for k, v in state.items() if v.dtype.is_floating_point}
    scales = lens.layer_scales(arch)

    def norm(x, prefix):
        if arch["normalization_type"] is None:
            return x
        x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
        return x * s[prefix + ".w"] + s[prefix + ".b"]

    n = tokens.shape[1]
    x = s["embed.W_E"][tokens] + s["pos_embed.W_pos"][:n]
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    for layer in range(arch["n_layers"]):
        p = f"blocks.{layer}."
        h = norm(x, p + "ln1")
        q, k, v = (torch.einsum("bnd,hde->bhne", h, s[p + f"attn.W_{c}"]) + s[p + f"attn.b_{c}"][None, :, None]
                   for c in "QKV")
        scores = torch.einsum("bhqe,bhke->bhqk", q, k) / scales[layer]
        pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
        x = x + torch.einsum("bhqe,hed->bqd", torch.einsum("bhqk,bhke->bhqe", pattern, v), s[p + "attn.W_O"]) \
            + s[p + "attn.b_O"]
        if not arch["attn_only"]:
            h = norm(x, p + "ln2")
            x = x + torch.relu(h @ s[p + "mlp.W_in"] + s[p + "mlp.b_in"]) @ s[p + "mlp.W_out"] + s[p + "mlp.b_out"]
    if arch["normalization_type"] is not None:
        x = norm(x, "ln_final")
    return x @ s["unembed.W_U"] + s["unembed.b_U"]


def random_state(arch, seed):
    generator = torch.Generator().manual_seed(seed)
    state = lens.initial_state(arch, seed)
    for name in lens.parameter_names(arch):
        state[name] = torch.randn(state[name].shape, generator=generator) * 0.5
    return state


@pytest.mark.parametrize("changes", [
    {},
    {"use_attn_scale": False},
    {"attn_scale": 1.0},
    {"attn_scale": 3.0, "scale_attn_by_inverse_layer_idx": True},
    {"attn_only": False, "d_mlp": 12, "act_fn": "relu", "normalization_type": "LN"},
])
def test_a_built_model_computes_what_its_canonical_weights_say(changes):
    arch = lens.normalise({**SMALL, **changes})
    state = random_state(arch, 1)
    model = lens.build(arch, state=state).to(torch.float64)
    tokens = torch.randint(0, 7, (6, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(tokens)
    torch.testing.assert_close(got, reference_logits(state, arch, tokens), rtol=1e-9, atol=1e-9)
    assert lens.architecture(model.float()) == arch  # the scale is read back from the layers, truthfully
    back = lens.canonical_state(model)
    assert all(torch.equal(back[name], state[name]) for name in lens.parameter_names(arch))
    assert all(back[name].is_contiguous() for name in back)  # the same memory layout under every version


def test_the_attention_scale_is_what_scores_are_divided_by():
    assert lens.normalise(SMALL)["attn_scale"] == math.sqrt(4)
    assert lens.normalise({**SMALL, "use_attn_scale": False})["attn_scale"] == 1.0
    assert lens.normalise({**SMALL, "attn_scale": 2.5})["attn_scale"] == 2.5
    assert lens.layer_scales(lens.normalise({**SMALL, "attn_scale": 2.0, "scale_attn_by_inverse_layer_idx": True})) \
        == [2.0, 4.0]
    with pytest.raises(lens.LensError, match="not a positive number"):
        lens.normalise({**SMALL, "attn_scale": 0.0})
    with pytest.raises(lens.LensError, match="d_model must be a positive integer"):
        lens.normalise({**SMALL, "d_model": 8.5})


def test_initialisation_is_gbmis_own_deterministic_and_version_free():
    arch = lens.normalise(SMALL)
    first, again, other = lens.initial_state(arch, 3), lens.initial_state(arch, 3), lens.initial_state(arch, 4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["embed.W_E"], other["embed.W_E"])
    assert not first["blocks.0.attn.b_Q"].any() and first["blocks.0.attn.W_Q"].std() > 0.1
    a, b = lens.build(arch, seed=3), lens.build(arch, seed=3)
    assert model_hash(a) == model_hash(b)
    before = torch.random.get_rng_state()
    lens.build(arch, seed=5)
    assert torch.equal(before, torch.random.get_rng_state())  # building leaves torch's global RNG alone


@pytest.mark.skipif(TL4, reason="compares with TransformerLens 3.x's own initialisation")
def test_gbmis_initialisation_is_transformer_lens_3s_for_the_same_seed():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    for changes in ({}, {"attn_only": False, "d_mlp": 12, "act_fn": "relu", "normalization_type": "LN"}):
        fields = {**SMALL, **changes}
        theirs = HookedTransformer(HookedTransformerConfig(seed=11, device="cpu", **fields))
        ours = lens.initial_state(lens.normalise(fields), 11)
        state = theirs.state_dict()
        for name in lens.parameter_names(lens.normalise(fields)):
            assert torch.equal(state[name], ours[name]), name


@pytest.mark.skipif(not TL4, reason="compares with TransformerLens 4's own checkpoint conversion")
def test_the_bridge_layout_is_transformer_lens_4s_own_conversion():
    from transformer_lens.conversion_utils import convert_tl_checkpoint

    arch = lens.normalise(SMALL)
    state = random_state(arch, 5)
    model = lens.build(arch, state=state)
    theirs = convert_tl_checkpoint({k: v for k, v in state.items() if k in lens.shapes(arch)}, model.cfg)
    ours = model.state_dict()
    for name, value in theirs.items():
        if name in ours:
            assert torch.equal(ours[name], value), name
    for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_O"):  # the bridge's own accessors agree
        assert torch.equal(getattr(model.blocks[1].attn, name), state[f"blocks.1.attn.{name}"]), name


def test_either_layout_of_a_state_dict_becomes_the_canonical_one():
    arch = lens.normalise(SMALL)
    state = random_state(arch, 6)
    model = lens.build(arch, state=state)
    native = model.state_dict()
    assert lens.is_bridge_layout(native) == TL4
    canonical = lens.to_canonical(native, arch)
    assert all(torch.equal(canonical[name], state[name]) for name in lens.parameter_names(arch))
    with pytest.raises(lens.LensError, match="needs its config"):
        lens.to_canonical({"embed.weight": state["embed.W_E"]})


def test_weights_that_do_not_fit_are_refused_naming_them():
    arch = lens.normalise(SMALL)
    state = random_state(arch, 7)
    del state["unembed.W_U"]
    state["blocks.0.attn.W_Q"] = state["blocks.0.attn.W_Q"][:, :4]
    state["extra"] = torch.zeros(3)
    with pytest.raises(ModelRefused, match="missing unembed.W_U; unexpected extra; wrong shapes: blocks.0.attn.W_Q"):
        lens.build(arch, state=state)
    with pytest.raises(ModelRefused, match="not a Linear"):
        lens.architecture(torch.nn.Linear(2, 2))


def test_editing_writes_back_whatever_the_version():
    model = lens.build(SMALL, seed=0)
    with lens.editing(model) as w:
        w["blocks.1.attn.W_O"].zero_()
    assert not lens.canonical_state(model)["blocks.1.attn.W_O"].any()
    assert lens.Weights.of(model).W_O.shape == (2, 2, 4, 8)
