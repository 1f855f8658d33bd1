"""All context blocks: identity at init, gradient flow, builder, GC/SNL/SE/LatentGNN behaviour, bf16 autocast."""
import pytest
import torch
import torch.nn.functional as F
from helpers.numerics import assert_close_to_scale
from torch import nn

from video_nl.config import get_default_config
from video_nl.errors import UserError
from video_nl.models.context import (CONTEXT_PREFIX, GCBlock, LatentGNNBlock, NonLocalBlock, SEBlock,
                                     SimplifiedNonLocalBlock, build_context_block)

DIM = 8
BLOCKS = {
    "nl_softmax": lambda: NonLocalBlock(dim=DIM),
    "nl_gaussian": lambda: NonLocalBlock(dim=DIM, instantiation="gaussian"),
    "nl_dot": lambda: NonLocalBlock(dim=DIM, instantiation="dot_product", mode="space", groups=2),
    "nl_concat": lambda: NonLocalBlock(dim=DIM, instantiation="concatenation", mode="time"),
    "nl_no_bn": lambda: NonLocalBlock(dim=DIM, use_bn=False, key_pool=(1, 1, 1)),
    "gc_add": lambda: GCBlock(dim=DIM),
    "gc_both_avg": lambda: GCBlock(dim=DIM, pool="avg", fusion=("channel_add", "channel_mul")),
    "gc_mul": lambda: GCBlock(dim=DIM, fusion=("channel_mul",)),
    "snl": lambda: SimplifiedNonLocalBlock(dim=DIM),
    "se": lambda: SEBlock(dim=DIM, ratio=0.25),
    "lgnn": lambda: LatentGNNBlock(dim=DIM, num_nodes=3, num_kernels=2, channel_stride=2),
    "lgnn_sym_nograph": lambda: LatentGNNBlock(dim=DIM, num_nodes=3, channel_stride=2, symmetric=True,
                                               graph_conv=False),
}


def _perturb(block: nn.Module) -> None:
    """Make the zero-initialised pieces non-zero (BN γ, last convs, LatentGNN γ)."""
    with torch.no_grad():
        for p in block.parameters():
            if not p.any():
                p.uniform_(0.5, 1.0)


def _x(seed=0, shape=(2, DIM, 4, 4, 4)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_identity_at_init_and_after_reset(name):
    torch.manual_seed(0)
    block = BLOCKS[name]()
    x = _x()
    assert torch.equal(block(x), x)
    _perturb(block)
    assert not torch.equal(block(x), x)
    block.reset_parameters()
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_gradients_reach_every_parameter_once_perturbed(name):
    torch.manual_seed(0)
    block = BLOCKS[name]()
    _perturb(block)
    x = _x().requires_grad_()
    (block(x) * _x(1)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_bf16_autocast_forward_on_cpu(name):
    torch.manual_seed(0)
    block = BLOCKS[name]()
    _perturb(block)
    block.eval()
    x = _x()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = block(x)
    branch_ref = block(x) - x
    assert z.shape == x.shape and torch.isfinite(z).all()
    assert (z.float() - x - branch_ref).norm() < 0.05 * branch_ref.norm()


# ---------------------------------------------------------------------------------------------- GC / SNL / SE
@pytest.mark.parametrize("block", [GCBlock(dim=DIM), SimplifiedNonLocalBlock(dim=DIM)], ids=["gc", "snl"])
def test_attention_map_is_the_pooling_distribution(block):
    x = _x(shape=(2, DIM, 3, 4, 5))
    att = block.attention_map(x)
    assert att.shape == (2, 3, 4, 5)
    assert_close_to_scale(att.sum(dim=(1, 2, 3)), torch.ones(2))
    logits = torch.einsum("c,bcthw->bthw", block.conv_mask.weight.flatten(), x) + block.conv_mask.bias
    assert_close_to_scale(att, torch.softmax(logits.flatten(1), 1).view_as(att))


def test_gc_avg_pool_attention_is_uniform():
    att = GCBlock(dim=DIM, pool="avg").attention_map(_x(shape=(1, DIM, 2, 3, 3)))
    torch.testing.assert_close(att, torch.full((1, 2, 3, 3), 1 / 18))


def test_snl_adds_the_transformed_attention_pooled_context():
    block = SimplifiedNonLocalBlock(dim=DIM)
    _perturb(block)
    x = _x()
    ctx = torch.einsum("bcn,bn->bc", x.flatten(2), block.attention_map(x).flatten(1))
    w_v = block.conv_value.weight[:, :, 0, 0, 0]
    expected = x + (ctx @ w_v.T + block.conv_value.bias)[:, :, None, None, None]
    assert_close_to_scale(block(x), expected)


def test_gc_fusion_is_mul_then_add():
    block = GCBlock(dim=DIM, pool="avg", fusion=("channel_add", "channel_mul"))
    _perturb(block)
    x = _x()
    ctx = x.mean(dim=(2, 3, 4), keepdim=True)
    expected = x * 2 * torch.sigmoid(block.channel_mul_conv(ctx)) + block.channel_add_conv(ctx)
    assert_close_to_scale(block(x), expected)


def test_se_rescales_channels_by_twice_the_sigmoid():
    block = SEBlock(dim=DIM, ratio=0.01)
    assert block.fc1.out_channels == 1  # at least one hidden unit
    _perturb(block)
    x = _x()
    u = x.mean(dim=(2, 3, 4))
    h = torch.relu(u @ block.fc1.weight.flatten(1).T + block.fc1.bias)
    s = 2 * torch.sigmoid(h @ block.fc2.weight.flatten(1).T + block.fc2.bias)
    assert_close_to_scale(block(x), x * s[:, :, None, None, None])


@pytest.mark.parametrize("kwargs, message", [({"pool": "max"}, "GC.POOL"), ({"fusion": ("channel_sub",)}, "GC.FUSION"),
                                             ({"fusion": ()}, "GC.FUSION"), ({"ratio": 0.0}, "GC.RATIO")])
def test_gc_rejects_bad_settings(kwargs, message):
    with pytest.raises(UserError, match=message):
        GCBlock(dim=DIM, **kwargs)


# ---------------------------------------------------------------------------------------------- LatentGNN
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("graph_conv", [True, False])
def test_latentgnn_output_equals_dense_effective_attention(symmetric, graph_conv):
    """z = x + γ·BN(W (A X_v2l)) with A assembled densely from attention_rows over all N queries."""
    torch.manual_seed(0)
    block = LatentGNNBlock(dim=DIM, num_nodes=3, channel_stride=2, symmetric=symmetric, graph_conv=graph_conv)
    _perturb(block)
    block.eval()
    x = _x(shape=(2, DIM, 2, 3, 4)).double()
    block.double()
    n = 2 * 3 * 4
    dense = block.attention_rows(x, torch.arange(n)).reshape(2, n, n)
    feats = F.normalize(block.reduce_v2l(x).flatten(2), dim=1)  # B×C_r×N
    propagated = torch.einsum("bij,bcj->bci", dense, feats).view(2, -1, 2, 3, 4)
    expected = x + block.gamma * block.bn_out(block.conv_out(propagated))
    torch.testing.assert_close(block(x), expected)
    rows = block.attention_rows(x, torch.tensor([5, 0, 17]))
    torch.testing.assert_close(rows.flatten(2), dense[:, [5, 0, 17]])


def test_latentgnn_latent_maps_are_normalised_assignments():
    block = LatentGNNBlock(dim=DIM, num_nodes=3, num_kernels=2, channel_stride=2)
    maps = block.latent_maps(_x(shape=(2, DIM, 2, 3, 4)))
    assert maps.shape == (2, 6, 2, 3, 4)
    norms = maps.flatten(2).norm(dim=2)
    assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))  # each node: unit L2 over positions (or empty)


# ---------------------------------------------------------------------------------------------- builder
@pytest.mark.parametrize("kind", sorted(CONTEXT_PREFIX))
@pytest.mark.parametrize("stage", [2, 5])
def test_build_context_block_from_config(kind, stage):
    cfg = get_default_config()
    cfg.NONLOCAL.POOL = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]]
    cfg.NONLOCAL.GROUP = [2, 1, 1, 1]
    block = build_context_block(cfg, kind=kind, dim=16, stage=stage)
    x = _x(shape=(1, 16, 4, 4, 4))
    assert torch.equal(block(x), x)
    if kind == "nonlocal":
        assert block.key_pool == ((1, 1, 1) if stage == 2 else (2, 2, 2))
        assert block.groups == (2 if stage == 2 else 1) and block.inner_dim == 8


def test_build_context_block_rejects_bad_stage_and_kind():
    cfg = get_default_config()
    with pytest.raises(UserError, match="stage"):
        build_context_block(cfg, kind="nonlocal", dim=8, stage=1)
    with pytest.raises(UserError, match="CONTEXT.TYPE"):
        build_context_block(cfg, kind="ccnet", dim=8, stage=3)


def test_context_prefix_contract():
    assert CONTEXT_PREFIX == {"nonlocal": "nl", "gc": "gc", "snl": "snl", "se": "se", "latentgnn": "lgnn"}
