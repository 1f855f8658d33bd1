"""LatentGNN (Zhang, Yan, He; ICML 2019) for video maps, following the released LatentGNN-V1 module.

x (B×C×T×H×W, N = T·H·W) ->
1. channel reduction: X = L2-normalise_channels(BN(conv(C→C_r)(x))), C_r = max(1, C // channel_stride);
   asymmetric mode has separate ``reduce_v2l`` / ``reduce_l2v`` features, symmetric mode shares one.
2. per kernel m (d latent nodes): Ψ = ReLU(BN(conv(C_r→d)(X))) -> B×d×N.
   Ψ_v2l is L2-normalised over the N positions, Ψ_l2v over the d nodes (symmetric: one Ψ, normalised
   over d, used in both directions).
3. visible→latent  Z = Ψ_v2l X_v2lᵀ (d×C_r);
   latent→latent  Z̃ = F Z with F = softmax_l(cos(z_k, z_l)) (d×d), skipped (F = I) when ``graph_conv`` is False;
   latent→visible X̃ = Ψ_l2vᵀ Z̃ (N×C_r).
4. kernels concatenated along channels -> conv(M·C_r→C, no bias) -> BN -> z = x + γ·out, γ a scalar = 0 at init.

The effective visible→visible attention of kernel m is A_m = Ψ_l2vᵀ F Ψ_v2l (N×N, rank ≤ d): X̃ = A_m X_v2l.
Bipartite passes and the latent softmax run in fp32 with autocast disabled. The optional V1 post-transform
h (conv-BN-ReLU) is not included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from .common import check_input, check_queries, msra_init_


def _conv_bn(c_in: int, c_out: int, *, eps: float, momentum: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 1, bias=False), nn.BatchNorm3d(c_out, eps=eps, momentum=momentum))


class LatentGNNBlock(nn.Module):
    """LatentGNN block: B×C×T×H×W -> B×C×T×H×W, identity at init (γ = 0).

    Submodules: ``reduce_v2l``, ``reduce_l2v`` (asymmetric), ``psi_v2l[m]``, ``psi_l2v[m]`` (asymmetric),
    ``conv_out``, ``bn_out``, parameter ``gamma``. ``key_pool`` is (1, 1, 1): attention rows span the input grid.
    """

    key_pool = (1, 1, 1)

    def __init__(self, *, dim: int, num_nodes: int = 100, num_kernels: int = 1, channel_stride: int = 8,
                 symmetric: bool = False, graph_conv: bool = True, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        if num_nodes < 1 or num_kernels < 1 or channel_stride < 1:
            raise UserError(f"LATENTGNN.NUM_NODES, NUM_KERNELS and CHANNEL_STRIDE must be >= 1 (got {num_nodes}, "
                            f"{num_kernels}, {channel_stride}).")
        self.dim, self.num_nodes, self.num_kernels = dim, num_nodes, num_kernels
        self.symmetric, self.graph_conv = symmetric, graph_conv
        reduced = max(1, dim // channel_stride)
        bn = {"eps": bn_eps, "momentum": bn_momentum}
        self.reduce_v2l = _conv_bn(dim, reduced, **bn)
        self.reduce_l2v = None if symmetric else _conv_bn(dim, reduced, **bn)
        self.psi_v2l = nn.ModuleList(nn.Sequential(*_conv_bn(reduced, num_nodes, **bn), nn.ReLU())
                                     for _ in range(num_kernels))
        self.psi_l2v = None if symmetric else nn.ModuleList(
            nn.Sequential(*_conv_bn(reduced, num_nodes, **bn), nn.ReLU()) for _ in range(num_kernels))
        self.conv_out = nn.Conv3d(num_kernels * reduced, dim, 1, bias=False)
        self.bn_out = nn.BatchNorm3d(dim, **bn)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MSRA (fan_out) convs, BN γ=1 β=0, residual scale γ = 0 (identity)."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                msra_init_(m)
            elif isinstance(m, nn.BatchNorm3d):
                m.reset_running_stats()
                m.reset_parameters()
        nn.init.zeros_(self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x B×C×T×H×W -> B×C×T×H×W."""
        check_input(x, self.dim, "LatentGNNBlock")
        b, _, t, h, w = x.shape
        feats, graphs = self._graphs(x)
        outs = []
        with torch.autocast(x.device.type, enabled=False):
            for psi_v2l, psi_l2v, affinity in graphs:
                latent = psi_v2l @ feats.transpose(1, 2)  # B×d×C_r
                if affinity is not None:
                    latent = affinity @ latent
                outs.append(latent.transpose(1, 2) @ psi_l2v)  # B×C_r×N
        out = torch.cat(outs, dim=1).view(b, -1, t, h, w).to(x.dtype)
        return x + self.gamma * self.bn_out(self.conv_out(out))

    def attention_rows(self, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Effective visible→visible attention rows: queries LongTensor[Q] (flat into T·H·W) -> B×Q×T×H×W.

        Row q of A_m = Ψ_l2vᵀ F Ψ_v2l (normalised as the block uses it), averaged over the kernels; fp32.
        Computed through the d latent nodes, never forming N×N.
        """
        check_input(x, self.dim, "LatentGNNBlock")
        b, _, t, h, w = x.shape
        queries = check_queries(queries, t * h * w).to(x.device)
        _, graphs = self._graphs(x)
        rows = 0
        for psi_v2l, psi_l2v, affinity in graphs:
            to_latent = psi_l2v[:, :, queries].transpose(1, 2)  # B×Q×d
            if affinity is not None:
                to_latent = to_latent @ affinity
            rows = rows + to_latent @ psi_v2l
        return (rows / self.num_kernels).view(b, queries.numel(), t, h, w)

    def latent_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Visible→latent assignments Ψ_v2l: B×(M·d)×T×H×W (kernels concatenated; B×d×T×H×W for one kernel)."""
        check_input(x, self.dim, "LatentGNNBlock")
        b, _, t, h, w = x.shape
        _, graphs = self._graphs(x)
        return torch.cat([g[0] for g in graphs], dim=1).view(b, -1, t, h, w)

    def _graphs(self, x: torch.Tensor):
        """Reduced features B×C_r×N (fp32) and per kernel (Ψ_v2l B×d×N, Ψ_l2v B×d×N, F B×d×d or None)."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        v2l = F.normalize(self.reduce_v2l(x).to(dtype), dim=1)
        l2v = v2l if self.symmetric else F.normalize(self.reduce_l2v(x).to(dtype), dim=1)
        graphs = []
        for m in range(self.num_kernels):
            psi_v2l = self.psi_v2l[m](v2l).flatten(2).to(dtype)
            if self.symmetric:
                psi_v2l = psi_l2v = F.normalize(psi_v2l, dim=1)
            else:
                psi_l2v = F.normalize(self.psi_l2v[m](l2v).flatten(2).to(dtype), dim=1)
                psi_v2l = F.normalize(psi_v2l, dim=2)
            graphs.append((psi_v2l, psi_l2v, self._latent_affinity(psi_v2l, v2l.flatten(2))))
        return v2l.flatten(2), graphs

    def _latent_affinity(self, psi_v2l: torch.Tensor, feats: torch.Tensor) -> torch.Tensor | None:
        """F = softmax over l of cos(z_k, z_l), z = Ψ_v2l X_v2lᵀ: B×d×d (None when ``graph_conv`` is off)."""
        if not self.graph_conv:
            return None
        with torch.autocast(feats.device.type, enabled=False):
            latent = F.normalize(psi_v2l @ feats.transpose(1, 2), dim=2)
            return torch.softmax(latent @ latent.transpose(1, 2), dim=-1)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_nodes={self.num_nodes}, num_kernels={self.num_kernels}, "
                f"symmetric={self.symmetric}, graph_conv={self.graph_conv}")
