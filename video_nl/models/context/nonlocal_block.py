"""Spacetime non-local block (Wang et al., CVPR 2018) with the four pairwise instantiations.

z = x + BN(W_z y),  y_i = Σ_j f(x_i, x_j) g(x_j) / 𝒞(x)   (x, z: B×C×T×H×W; y: B×C'×T×H×W)

θ runs on the full map (queries); keys and values come from the *input* max-pooled by ``key_pool``
(kernel = stride, floor as ``nn.MaxPool3d``) before φ and g, as both released codes do.

Instantiations (N' = keys each query attends to):
- ``softmax`` (alias ``embedded_gaussian``): softmax_j(θ_iᵀφ_j · s), s = C'^-0.5 if ``use_scale`` else 1.
- ``gaussian``: softmax_j(x_iᵀ x̂_j) on the raw input (x̂ = pooled x), no θ/φ and, as in the paper, no
  scale: ``use_scale`` applies to ``softmax`` only.
- ``dot_product``: θ_iᵀφ_j / N'.
- ``concatenation``: ReLU(w_θᵀθ_i + w_φᵀφ_j) / N', i.e. ReLU(w_fᵀ[θ_i; φ_j]) with w_f = [w_θ; w_φ]
  (``concat_project``, a 2C'→1 1×1×1 conv without bias), never building the N×N'×2C' tensor.

Modes: ``spacetime`` (all keys), ``space`` (keys in the query's frame; needs a temporal key pool of 1),
``time`` (keys at the query's spatial position; only the temporal part of ``key_pool`` applies, so
the effective pool — the ``key_pool`` attribute — is (kt, 1, 1)). ``groups`` folds T into G chunks of
T/G consecutive frames attended separately (T not divisible by G → UserError).

Fast path (no attention requested, ``fast_path``): softmax/gaussian run on
``F.scaled_dot_product_attention`` with the scale passed explicitly; dot product uses associativity,
θ((φ/N')ᵀ g), never forming N×N'; concatenation is always explicit. The explicit path computes the
affinities and their normalisation in fp32 with autocast disabled (fp16 logits can overflow).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from .cpu_attention import cpu_softmax_attention
from .common import check_input, check_queries, msra_init_, reset_bn_, zero_init_
from .layout import MODES, fold_groups, from_tokens, to_tokens, unfold_groups

INSTANTIATIONS = ("softmax", "gaussian", "dot_product", "concatenation")
ALIASES = {"embedded_gaussian": "softmax"}


class NonLocalBlock(nn.Module):
    """Non-local block: B×C×T×H×W -> B×C×T×H×W, the identity at initialisation.

    Submodules (state-dict names, as PySlowFast): ``conv_theta``, ``conv_phi`` (not for gaussian),
    ``conv_g``, ``conv_out``, ``bn`` (``use_bn``), ``concat_project`` (concatenation only).
    """

    def __init__(self, *, dim: int, inner_dim: int | None = None, instantiation: str = "softmax",
                 key_pool: tuple[int, int, int] = (1, 2, 2), use_scale: bool = True, mode: str = "spacetime",
                 groups: int = 1, use_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 fast_path: bool = True) -> None:
        super().__init__()
        instantiation = ALIASES.get(instantiation, instantiation)
        inner_dim = dim // 2 if inner_dim is None else inner_dim
        key_pool = tuple(int(k) for k in key_pool)
        _validate(dim=dim, inner_dim=inner_dim, instantiation=instantiation, key_pool=key_pool, mode=mode,
                  groups=groups)
        self.dim, self.inner_dim = dim, inner_dim
        self.instantiation, self.mode, self.groups = instantiation, mode, groups
        self.use_scale, self.fast_path = use_scale, fast_path
        self.key_pool: tuple[int, int, int] = (key_pool[0], 1, 1) if mode == "time" else key_pool
        self.pool = None if self.key_pool == (1, 1, 1) else nn.MaxPool3d(self.key_pool, stride=self.key_pool)
        if instantiation != "gaussian":
            self.conv_theta = nn.Conv3d(dim, inner_dim, 1)
            self.conv_phi = nn.Conv3d(dim, inner_dim, 1)
        self.conv_g = nn.Conv3d(dim, inner_dim, 1)
        if instantiation == "concatenation":
            self.concat_project = nn.Conv3d(2 * inner_dim, 1, 1, bias=False)
        self.conv_out = nn.Conv3d(inner_dim, dim, 1)
        self.bn = nn.BatchNorm3d(dim, eps=bn_eps, momentum=bn_momentum) if use_bn else None
        self.reset_parameters()

    @property
    def scale(self) -> float:
        """Multiplier of the softmax logits (1 for gaussian and for ``use_scale=False``)."""
        return self.inner_dim ** -0.5 if self.instantiation == "softmax" and self.use_scale else 1.0

    def reset_parameters(self) -> None:
        """MSRA (fan_out) convs with zero biases; BN γ=β=0 (or a zero out conv without BN): identity."""
        for conv in (getattr(self, "conv_theta", None), getattr(self, "conv_phi", None), self.conv_g, self.conv_out):
            if conv is not None:
                msra_init_(conv)
        if self.instantiation == "concatenation":  # fan_out is 1 here, so use fan_in
            msra_init_(self.concat_project, mode="fan_in")
        if self.bn is not None:
            reset_bn_(self.bn, gamma=0.0)
        else:
            zero_init_(self.conv_out)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x B×C×T×H×W -> z B×C×T×H×W, or ``(z, attn)`` with attn B×Nq×Nk when ``return_attention``.

        attn is in the global layout: Nq = T·H·W queries (flat t,h,w order) by Nk = Tk·Hk·Wk keys of the
        pooled key grid (see :meth:`key_grid`), zeros where the mode or the groups exclude a key. It is
        the fp32 normalised affinity f/𝒞. Meant for small inputs (it is N×N').
        """
        check_input(x, self.dim, "NonLocalBlock")
        b, _, t, h, w = x.shape
        q, k, v = self._tokens(x, values=True)
        explicit = return_attention or not self.fast_path or self.instantiation == "concatenation"
        if explicit:
            attn = self._attention(q, k)
            y = (attn @ v.to(attn.dtype)).to(v.dtype)
        else:
            y = self._fast_aggregate(q, k, v)
        y = unfold_groups(from_tokens(y, self.mode, b * self.groups, t // self.groups, h, w), self.groups)
        # from_tokens gives a transposed (channels-last) view; conv_out, BN and their backward run several
        # times slower on it than on x's own layout, and x + out would copy: match x's memory format.
        y = y.contiguous(memory_format=torch.contiguous_format if x.is_contiguous() else torch.channels_last_3d)
        out = self.conv_out(y)
        z = x + (self.bn(out) if self.bn is not None else out)
        if return_attention:
            return z, self._global_attention(attn, b, t, h, w)
        return z

    def attention_rows(self, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Attention of selected queries: x B×C×T×H×W, queries LongTensor[Q] (flat t·H·W+h·W+w) -> B×Q×Tk×Hk×Wk.

        Row q holds the fp32 normalised weights over the pooled key grid (zeros where excluded), equal
        to ``forward(x, return_attention=True)[1][:, q]`` but computed one attention group at a time,
        without forming the N×N' map.
        """
        check_input(x, self.dim, "NonLocalBlock")
        b, _, t, h, w = x.shape
        queries = check_queries(queries, t * h * w).to(x.device)
        q, k, _ = self._tokens(x, values=False)
        q_index, k_index, k_grid = self._index_maps(t, h, w, x.device)
        seqs, seq_len = q_index.shape
        where = torch.empty(t * h * w, dtype=torch.long, device=x.device)
        where[q_index.flatten()] = torch.arange(q_index.numel(), device=x.device)
        seq_of, pos_of = where[queries].div(seq_len, rounding_mode="floor"), where[queries] % seq_len
        q = q.reshape(b, seqs, seq_len, q.shape[-1])
        k = k.reshape(b, seqs, k.shape[1], k.shape[-1])
        rows = q.new_zeros(b, queries.numel(), math.prod(k_grid), dtype=torch.promote_types(q.dtype, torch.float32))
        for s in seq_of.unique().tolist():
            picked = (seq_of == s).nonzero().squeeze(1)
            rows[:, picked[:, None], k_index[s][None, :]] = self._attention(q[:, s, pos_of[picked]], k[:, s])
        return rows.view(b, queries.numel(), *k_grid)

    def key_grid(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """(Tk, Hk, Wk) of the keys for a T×H×W input: each group pooled by ``key_pool`` (floor), concatenated."""
        kt, kh, kw = self.key_pool
        return self.groups * ((t // self.groups) // kt), h // kh, w // kw

    # ------------------------------------------------------------------ internals
    def _tokens(self, x: torch.Tensor, *, values: bool):
        """Queries M×Nq×Cq, keys M×Nk×Cq and values M×Nk×C' (or None), one sequence per attention group."""
        _, _, t, h, w = x.shape
        tk, hk, wk = self.key_grid(t, h, w)
        if tk == 0 or hk == 0 or wk == 0:
            raise UserError(f"A non-local block with key pool {self.key_pool} and {self.groups} temporal groups got "
                            f"a {t}×{h}×{w} map, which pools to no keys. Use a smaller NONLOCAL.POOL or "
                            f"NONLOCAL.GROUP for this stage, or a larger input clip.")
        xg = fold_groups(x, self.groups)
        pooled = self.pool(xg) if self.pool is not None else xg
        if self.instantiation == "gaussian":
            q_map, k_map = xg, pooled
        else:
            q_map, k_map = self.conv_theta(xg), self.conv_phi(pooled)
        v = to_tokens(self.conv_g(pooled), self.mode) if values else None
        return to_tokens(q_map, self.mode), to_tokens(k_map, self.mode), v

    def _attention(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Normalised affinity f(x_i, x_j)/𝒞 in fp32 (fp64 for fp64 input): q ...×Nq×Cq, k ...×Nk×Cq -> ...×Nq×Nk."""
        num_keys = k.shape[-2]
        dtype = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):
            q, k = q.to(dtype), k.to(dtype)
            if self.instantiation in ("softmax", "gaussian"):
                return torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1)
            if self.instantiation == "dot_product":
                return (q @ k.transpose(-1, -2)) / num_keys
            # Column weights (C'×1), not vectors: onnxruntime's level-2 graph fusions compute a transposed
            # 3-D input times a 1-D weight wrongly (onnxruntime 1.31), and exported graphs keep this form.
            w_theta, w_phi = self.concat_project.weight.to(dtype).view(-1, 1).split(self.inner_dim)
            return F.relu(q @ w_theta + (k @ w_phi).transpose(-1, -2)) / num_keys

    def _fast_aggregate(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """y M×Nq×C' without materialising the attention (softmax/gaussian via SDPA, dot product by associativity)."""
        q, k = q.to(v.dtype), k.to(v.dtype)
        if self.instantiation == "dot_product":
            return q @ ((k / k.shape[-2]).transpose(-1, -2) @ v)
        if q.device.type == "cpu" and torch.is_grad_enabled():
            # CPU training: SDPA's CPU backward uses one thread per sequence; cpu_attention splits queries (fp32).
            dtype = torch.promote_types(v.dtype, torch.float32)
            with torch.autocast("cpu", enabled=False):
                y = cpu_softmax_attention(q.to(dtype), k.to(dtype), v.to(dtype), scale=self.scale)
            return y.to(v.dtype)
        # Fused (flash / memory-efficient) kernels need 4-D inputs (M×1×L×E) with a unit-stride last dim;
        # otherwise SDPA silently falls back to the math kernel, which materialises the N×N' map.
        # Fused kernels also need equal q/k and v widths (gaussian: C vs C'): zero-pad the narrower side,
        # which changes neither the logits nor the kept output channels.
        width_v, width = v.shape[-1], max(q.shape[-1], v.shape[-1])
        q, k = F.pad(q, (0, width - q.shape[-1])), F.pad(k, (0, width - k.shape[-1]))
        v = F.pad(v, (0, width - width_v))
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        y = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=self.scale)
        return y[:, 0, :, :width_v]

    def _index_maps(self, t: int, h: int, w: int, device: torch.device):
        """For one sample: global query indices S×Lq, global key indices S×Lk (S attention sequences), key grid."""
        k_grid = self.key_grid(t, h, w)
        q_ids = fold_groups(torch.arange(t * h * w, device=device).view(1, 1, t, h, w), self.groups)
        k_ids = torch.arange(math.prod(k_grid), device=device).view(self.groups, 1, k_grid[0] // self.groups,
                                                                     *k_grid[1:])
        return to_tokens(q_ids, self.mode)[..., 0], to_tokens(k_ids, self.mode)[..., 0], k_grid

    def _global_attention(self, attn: torch.Tensor, b: int, t: int, h: int, w: int) -> torch.Tensor:
        """Scatter per-sequence attention (B·S)×Lq×Lk into B×(T·H·W)×(Tk·Hk·Wk) with zeros elsewhere."""
        q_index, k_index, k_grid = self._index_maps(t, h, w, attn.device)
        num_keys = math.prod(k_grid)
        flat = (q_index[:, :, None] * num_keys + k_index[:, None, :]).flatten()
        out = attn.new_zeros(b, t * h * w * num_keys)
        out[:, flat] = attn.reshape(b, -1)
        return out.view(b, t * h * w, num_keys)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, inner_dim={self.inner_dim}, instantiation={self.instantiation}, "
                f"key_pool={self.key_pool}, mode={self.mode}, groups={self.groups}, scale={self.scale:.4g}, "
                f"fast_path={self.fast_path}")


def _validate(*, dim: int, inner_dim: int, instantiation: str, key_pool: tuple, mode: str, groups: int) -> None:
    if instantiation not in INSTANTIATIONS:
        raise UserError(f"Unknown non-local instantiation {instantiation!r}; choose one of "
                        f"{', '.join(INSTANTIATIONS + tuple(ALIASES))} (NONLOCAL.INSTANTIATION).")
    if mode not in MODES:
        raise UserError(f"Unknown non-local mode {mode!r}; choose one of {', '.join(MODES)} (NONLOCAL.MODE).")
    if dim < 1 or inner_dim < 1:
        raise UserError(f"A non-local block needs positive channel counts (got dim={dim}, inner_dim={inner_dim}); "
                        f"NONLOCAL.INNER_RATIO times the stage width must be at least 1.")
    if len(key_pool) != 3 or min(key_pool) < 1:
        raise UserError(f"NONLOCAL.POOL entries are 3 positive ints (t, h, w), kernel = stride; got {list(key_pool)}. "
                        f"Use [1, 1, 1] for no key pooling.")
    if mode == "space" and key_pool[0] != 1:
        raise UserError(f"NONLOCAL.MODE space attends to keys in the query's own frame, so the temporal key pool "
                        f"must be 1; got NONLOCAL.POOL {list(key_pool)}. Use [1, h, w].")
    if groups < 1:
        raise UserError(f"NONLOCAL.GROUP must be >= 1 (got {groups}).")

