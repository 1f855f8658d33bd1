"""Non-local block: formulas, fast path == explicit path, attention API, modes and groups."""
import itertools

import pytest
import torch
from helpers.numerics import assert_close_to_scale

from video_nl.errors import UserError
from video_nl.models.context import NonLocalBlock

INSTANTIATIONS = ["softmax", "gaussian", "dot_product", "concatenation"]


def _block(inst, *, dim=6, inner=4, pool=(1, 2, 2), mode="spacetime", groups=1, use_scale=True, seed=0,
           dtype=torch.float64):
    """A block with a non-zero (random) output conv and no BN, so the residual branch is visible."""
    torch.manual_seed(seed)
    block = NonLocalBlock(dim=dim, inner_dim=inner, instantiation=inst, key_pool=pool, mode=mode, groups=groups,
                          use_scale=use_scale, use_bn=False).to(dtype)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.5)
    return block


def _conv(conv, x):
    """1×1×1 conv written out: weight O×C, bias O."""
    return torch.einsum("oc,bcthw->bothw", conv.weight[:, :, 0, 0, 0], x) + conv.bias[None, :, None, None, None]


def _reference(block, x):
    """Direct transcription of y_i = Σ_j f(x_i, x_j) g(x_j) / 𝒞 over all positions, keys max-pooled 1×2×2."""
    b, c, t, h, w = x.shape
    pooled = x.view(b, c, t, h // 2, 2, w // 2, 2).amax(dim=(4, 6))
    inner = block.inner_dim
    g = _conv(block.conv_g, pooled).flatten(2)  # B×C'×N'
    n_keys = g.shape[-1]
    if block.instantiation == "gaussian":
        f = torch.exp(torch.einsum("bci,bcj->bij", x.flatten(2), pooled.flatten(2)))
        attn = f / f.sum(-1, keepdim=True)
    else:
        theta, phi = _conv(block.conv_theta, x).flatten(2), _conv(block.conv_phi, pooled).flatten(2)
        if block.instantiation == "softmax":
            f = torch.exp(torch.einsum("bci,bcj->bij", theta, phi) / inner ** 0.5)
            attn = f / f.sum(-1, keepdim=True)
        elif block.instantiation == "dot_product":
            attn = torch.einsum("bci,bcj->bij", theta, phi) / n_keys
        else:
            w_f = block.concat_project.weight.flatten()
            attn = torch.zeros(b, theta.shape[-1], n_keys, dtype=x.dtype)
            for bi, i, j in itertools.product(range(b), range(theta.shape[-1]), range(n_keys)):
                attn[bi, i, j] = torch.relu(w_f @ torch.cat([theta[bi, :, i], phi[bi, :, j]])) / n_keys
    y = torch.einsum("bij,bcj->bci", attn, g).view(b, inner, t, h, w)
    return x + _conv(block.conv_out, y), attn


@pytest.mark.parametrize("inst", INSTANTIATIONS)
def test_each_instantiation_matches_its_formula(inst):
    block = _block(inst)
    x = torch.randn(2, 6, 2, 4, 4, dtype=torch.float64) * 0.5
    z_ref, attn_ref = _reference(block, x)
    z_explicit, attn = block(x, return_attention=True)
    torch.testing.assert_close(z_explicit, z_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(attn, attn_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(block(x), z_ref, rtol=1e-9, atol=1e-9)  # fast path


def test_use_scale_only_changes_the_softmax_variant():
    x = torch.randn(1, 6, 2, 4, 4, dtype=torch.float64)
    for inst, changes in [("softmax", True), ("gaussian", False), ("dot_product", False)]:
        a = _block(inst, use_scale=True)(x, return_attention=True)[1]
        b = _block(inst, use_scale=False)(x, return_attention=True)[1]
        assert (not torch.allclose(a, b)) == changes, inst


CASES = [(inst, mode, groups, pool) for inst, mode, groups, pool in itertools.product(
    INSTANTIATIONS, ["spacetime", "space", "time"], [1, 2], [(1, 1, 1), (1, 2, 2), (2, 2, 2)])
    if not (mode == "space" and pool[0] != 1)]


@pytest.mark.parametrize("inst,mode,groups,pool", CASES)
def test_fast_path_equals_explicit_path(inst, mode, groups, pool):
    torch.manual_seed(1)
    block = _block(inst, dim=8, inner=4, pool=pool, mode=mode, groups=groups, dtype=torch.float32)
    x = torch.randn(2, 8, 4, 4, 6, requires_grad=True)
    fast = block(x)
    explicit, _ = block(x, return_attention=True)
    assert_close_to_scale(fast, explicit)
    g_fast, = torch.autograd.grad(fast.square().sum(), x)
    g_explicit, = torch.autograd.grad(explicit.square().sum(), x)
    assert_close_to_scale(g_fast, g_explicit)


@pytest.mark.parametrize("inst,mode,groups,pool", CASES)
def test_attention_rows_equal_rows_of_the_explicit_attention(inst, mode, groups, pool):
    block = _block(inst, dim=8, inner=4, pool=pool, mode=mode, groups=groups)
    x = torch.randn(2, 8, 4, 4, 6, dtype=torch.float64)
    _, attn = block(x, return_attention=True)
    queries = torch.tensor([0, 5, 37, 50, 95, 95])
    rows = block.attention_rows(x, queries)
    assert rows.shape == (2, 6, *block.key_grid(4, 4, 6))
    torch.testing.assert_close(rows.flatten(2), attn[:, queries], rtol=1e-12, atol=1e-12)


def _key_coords(block, t, h, w):
    """(t, h, w) coordinates in *input* units of every key of the pooled key grid (top-left of its window)."""
    tk, hk, wk = block.key_grid(t, h, w)
    kt, kh, kw = block.key_pool
    tt, hh, ww = torch.meshgrid(torch.arange(tk) * kt, torch.arange(hk) * kh, torch.arange(wk) * kw, indexing="ij")
    return tt, hh, ww


@pytest.mark.parametrize("mode,groups,pool", [("space", 1, (1, 2, 2)), ("time", 1, (1, 2, 2)),
                                              ("time", 2, (2, 2, 2)), ("spacetime", 2, (1, 2, 2))])
def test_mode_and_group_masks(mode, groups, pool):
    block = _block("softmax", pool=pool, mode=mode, groups=groups)
    t, h, w = 4, 4, 6
    x = torch.randn(1, 6, t, h, w, dtype=torch.float64)
    queries = torch.arange(t * h * w)
    rows = block.attention_rows(x, queries)[0]  # Q×Tk×Hk×Wk
    kt_, kh_, kw_ = _key_coords(block, t, h, w)
    qt, qh, qw = queries // (h * w), (queries // w) % h, queries % w
    tg = t // groups
    for q in range(queries.numel()):
        allowed = torch.ones_like(kt_, dtype=torch.bool)
        if mode == "space":
            allowed &= kt_ == qt[q]
        if mode == "time":
            allowed &= (kh_ == qh[q]) & (kw_ == qw[q])
        allowed &= kt_ // tg == qt[q] // tg
        assert torch.all(rows[q][~allowed] == 0)
        assert torch.all(rows[q][allowed] > 0)
        torch.testing.assert_close(rows[q].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_time_mode_uses_only_the_temporal_key_pool():
    block = NonLocalBlock(dim=4, mode="time", key_pool=(2, 2, 2))
    assert block.key_pool == (2, 1, 1)
    assert block.key_grid(8, 6, 6) == (4, 6, 6)


def test_user_errors_for_bad_settings():
    with pytest.raises(UserError, match="does not divide"):
        NonLocalBlock(dim=4, groups=3)(torch.randn(1, 4, 4, 4, 4))
    with pytest.raises(UserError, match="temporal key pool"):
        NonLocalBlock(dim=4, mode="space", key_pool=(2, 2, 2))
    with pytest.raises(UserError, match="pools to no keys"):
        NonLocalBlock(dim=4, key_pool=(1, 4, 4))(torch.randn(1, 4, 2, 2, 2))
    with pytest.raises(UserError, match="instantiation"):
        NonLocalBlock(dim=4, instantiation="cosine")
    with pytest.raises(UserError, match="Query indices"):
        NonLocalBlock(dim=4).attention_rows(torch.randn(1, 4, 1, 2, 2), torch.tensor([4]))


def test_embedded_gaussian_is_an_alias_of_softmax():
    assert NonLocalBlock(dim=4, instantiation="embedded_gaussian").instantiation == "softmax"


@pytest.mark.parametrize("inst", INSTANTIATIONS)
@pytest.mark.parametrize("fast_path", [True, False])
def test_bf16_autocast_forward_on_cpu(inst, fast_path):
    torch.manual_seed(0)
    block = _block(inst, dim=8, inner=4, dtype=torch.float32)
    block.fast_path = fast_path
    x = torch.randn(2, 8, 2, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = block(x)
    assert z.shape == x.shape and torch.isfinite(z).all()
    branch_ref = block(x) - x
    assert (z.float() - x - branch_ref).norm() < 0.05 * branch_ref.norm()


def test_parameter_layout_matches_pyslowfast_names():
    names = set(NonLocalBlock(dim=8).state_dict())
    expected = {f"{c}.{p}" for c in ("conv_theta", "conv_phi", "conv_g", "conv_out") for p in ("weight", "bias")}
    expected |= {f"bn.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert names == expected


def _op_names(fn):
    """Names of the aten ops that ``fn()`` runs (torch.profiler, CPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


@pytest.mark.parametrize("inst", ["softmax", "gaussian"])
def test_fast_path_uses_a_fused_sdpa_kernel(inst):
    """The fused kernel (not SDPA's math fallback, which builds N×N') must be eligible for our token layout.

    CPU training takes the fused query-group path (tests/test_cpu_attention.py); inference and CUDA take SDPA.
    """
    block = NonLocalBlock(dim=8, instantiation=inst)
    with torch.no_grad():
        names = _op_names(lambda: block(torch.randn(1, 8, 2, 4, 4)))
    assert any("flash_attention" in n for n in names), names
    assert not any("softmax" in n for n in names), names
