"""SPANet2 network: input embeddings, central transformer, particle branches, symmetric tensor attention.

Every architecture option builds what upstream SPANet v2.1.1 builds (same blocks, same widths, same
initialisation; parameter counts per module in docs/network.md), written batch-first for speed:

    per input:  normalise → embedding stack (in → 16 → 32 → … → D) → ⊕ position vector (P)
    all inputs: one shared linear block (D + P → D) → central encoder with an event token
    per particle: branch linear stack + encoder with a particle token → detection head;
                  per daughter: jet linear stack + encoder with a daughter token → projection y_d;
                  logits[i, j] = Σ_k y_1[i, k] y_2[j, k] / D, averaged over the daughter permutations
    per classification: linear stack on the event vector → BatchNorm → linear

The gated transformer is GTrXL: x ← GRU(x, attention(norm(x))), then a GRU linear block. Its GRU gate
starts near the identity (update-gate bias −2, z ≈ 0.12), as GTrXL prescribes; a gate that starts at
z ≈ 0.5 halves the identity path per sub-layer and an 8-layer encoder then cannot learn.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spanet2.errors import ConfigError
from spanet2.events.layout import strip_group
from spanet2.events.topology import EventTopology
from spanet2.training.normalization import NormalizationStats
from spanet2.training.options import Options

__all__ = [
    "SPANet2",
    "ModelOutputs",
    "GRUGate",
    "linear_block",
    "TransformerLayer",
    "InputNormalizer",
    "embedding_dims",
    "classification_keys",
    "parameter_counts",
    "FUSED_ATTENTION_ON_CPU",
    "GATE_BIAS",
]

log = logging.getLogger(__name__)

# On CUDA the attention is torch's fused scaled_dot_product_attention. On CPU, for SPANet's short
# sequences (~12 tokens) the fused CPU kernel pays a large overhead per (event, head); the same
# arithmetic as batched matmuls measured 1.45x faster for inference and 1.2x for training (1 thread,
# hidden_dim 32, batch 2048). Set True to use the fused kernel on CPU as well (same results to 1e-6).
FUSED_ATTENTION_ON_CPU = False

# GRU update-gate bias at initialisation: z = σ(… − GATE_BIAS) ≈ 0.12, i.e. each gated layer starts close
# to the identity (GTrXL, Parisotto et al. 2019; upstream SPANet uses the same value).
GATE_BIAS = 2.0

Batch = dict  # {"sequential": {name: (B, J, F)}, "sequential_mask": {name: (B, J) bool}, "global": {name: (B, F)}, ...}


@dataclass
class ModelOutputs:
    """What one forward pass returns.

    assignment_log_probs: one (B, J, J) tensor per particle (topology order): log P(jet i, jet j) over all
        J² cells; cells touching padding and i == j are −inf; exactly symmetric for symmetric daughters.
    detection_logits: (B, P) logit that each particle is reconstructable.
    classification_logits: "EVENT/signal" → (B, C).
    event_vector: (B, D) central summary token; particle_vectors: (B, P, D) branch tokens;
    daughter_vectors: (B, P, 2, D) the daughter tokens of the split attention (zeros without it).
    """

    assignment_log_probs: list[Tensor]
    detection_logits: Tensor
    classification_logits: dict[str, Tensor]
    event_vector: Tensor
    particle_vectors: Tensor
    daughter_vectors: Tensor | None = None


def classification_keys(topology: EventTopology) -> list[str]:
    """Classification head names, e.g. ["EVENT/signal"] (dataset paths without "CLASSIFICATIONS/")."""
    return [strip_group(p) for p in topology.classification_paths()]


def embedding_dims(initial_dim: int, hidden_dim: int, max_layers: int) -> list[int]:
    """Output widths of the input embedding stack, as upstream builds it.

    First initial_dim; then doubling while the double stays below hidden_dim (at most max_layers
    doublings); always a last block to hidden_dim. E.g. (16, 128, 10) → [16, 32, 64, 128].
    """
    dims = [initial_dim]
    for _ in range(max_layers):
        if 2 * dims[-1] >= hidden_dim:
            break
        dims.append(2 * dims[-1])
    return dims + [hidden_dim]


# ---------------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------------


def _activation(name: str, dim: int) -> nn.Module:
    table = {"ReLU": nn.ReLU, "ELU": nn.ELU, "CELU": nn.CELU, "GELU": nn.GELU}
    if name == "PReLU":
        return nn.PReLU(dim)  # one slope per channel, as upstream
    return table[name]() if name in table else nn.Identity()


class SparseDropout(nn.Module):
    """Dropout for small p with an exact i.i.d. Bernoulli(p) mask drawn at cost ∝ p·n, not n.

    The gaps between dropped elements of a Bernoulli(p) sequence are i.i.d. Geometric(p); drawing the gaps
    and scattering zeros needs about p·n random numbers where torch's dropout draws n. At the note's tuned
    dropout (0.0059) that removes ~10 % of a CPU training step. Same distribution as nn.Dropout (kept
    values scaled by 1/(1 − p)), different random stream.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        n = x.numel()
        expected = n * self.p
        draws = int(expected + 6.0 * math.sqrt(expected) + 16)  # enough gaps to cover n with overwhelming odds
        positions = torch.empty(draws, device=x.device).geometric_(self.p).cumsum_(0) - 1.0  # 0-based
        while positions[-1] < n:  # astronomically rare: draw more gaps
            more = torch.empty(draws, device=x.device).geometric_(self.p).cumsum_(0) + positions[-1]
            positions = torch.cat([positions, more])
        dropped = positions[positions < n].long()
        scale = torch.full((n,), 1.0 / (1.0 - self.p), dtype=x.dtype, device=x.device)
        scale[dropped] = 0.0
        return x * scale.view_as(x)


SPARSE_DROPOUT_BELOW = 0.05  # p under which SparseDropout's cost (∝ p) beats drawing one number per element


def _dropout(p: float) -> nn.Module:
    """Dropout, or nothing at p = 0 (a no-op dropout still costs a pass over the tensor in training)."""
    if p <= 0:
        return nn.Identity()
    return SparseDropout(p) if p < SPARSE_DROPOUT_BELOW else nn.Dropout(p)


class _MaskedBatchNorm(nn.Module):
    """Batch normalisation whose statistics use only the real (unmasked) vectors of (..., D)."""

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.training:
            real = x.reshape(-1, x.shape[-1]) if mask is None else x[mask]  # (N_real, D)
            mean, var = real.mean(0), real.var(0, unbiased=False) if real.shape[0] > 1 else x.new_ones(x.shape[-1])
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().float(), self.momentum)
                self.running_var.lerp_(var.detach().float(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class _Norm(nn.Module):
    """normalization option → a module called as norm(x, mask) on (..., D)."""

    def __init__(self, name: str, dim: int):
        super().__init__()
        self.kind = name
        if name == "LayerNorm":
            self.norm = nn.LayerNorm(dim)
        elif name == "BatchNorm":  # statistics over every vector, padding included (as upstream)
            self.norm = nn.BatchNorm1d(dim)
        elif name == "MaskedBatchNorm":
            self.norm = _MaskedBatchNorm(dim)
        elif name == "None":
            self.norm = nn.Identity()
        else:
            raise ConfigError(
                None, "normalization", f"expected LayerNorm, BatchNorm, MaskedBatchNorm or None, got {name!r}"
            )

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.kind == "BatchNorm":
            return self.norm(x.reshape(-1, x.shape[-1])).view_as(x)
        if self.kind == "MaskedBatchNorm":
            return self.norm(x, mask)
        return self.norm(x)


def _apply_mask(x: Tensor, mask: Tensor | None, masking: str) -> Tensor:
    """Zero padded vectors ("Filling" / "Multiplicative"); "None" leaves them."""
    if mask is None or masking == "None":
        return x
    return x * mask.unsqueeze(-1).to(x.dtype)


class _Residual(nn.Module):
    """The skip path of a linear block: x itself, or a linear map (with bias) when the widths differ."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim) if in_dim != out_dim else None

    def forward(self, x: Tensor) -> Tensor:
        return x if self.proj is None else self.proj(x)


class GRUGate(nn.Module):
    """GTrXL's gate: out = (1 − z)·skip + z·h with reset gate r, update gate z and candidate h.

        r = σ(W_r x + U_r s),  z = σ(W_z x + U_z s − b_g),  h = tanh(W_g x + U_g (r ⊙ s))

    for a layer output x and its skip s. b_g starts at GATE_BIAS, so z ≈ 0.12: the layer starts near the
    identity. W_r, W_z, W_g (with biases) are one fused linear map, U_r, U_z another (6D² + 4D parameters).
    """

    def __init__(self, dim: int, bias_init: float = GATE_BIAS):
        super().__init__()
        self.dim = dim
        self.input_proj = nn.Linear(dim, 3 * dim)  # W_r | W_z | W_g
        self.skip_proj = nn.Linear(dim, 2 * dim, bias=False)  # U_r | U_z
        self.candidate_proj = nn.Linear(dim, dim, bias=False)  # U_g
        self.gate_bias = nn.Parameter(torch.full((dim,), float(bias_init)))
        # each D×D piece initialised like its own nn.Linear(dim, dim): the fused maps have fan_in = dim too

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        skip = skip.to(x.dtype)
        wr, wz, wg = self.input_proj(x).split(self.dim, dim=-1)
        ur, uz = self.skip_proj(skip).split(self.dim, dim=-1)
        reset = torch.sigmoid(wr + ur)
        update = torch.sigmoid(wz + uz - self.gate_bias.to(x.dtype))
        candidate = torch.tanh(wg + self.candidate_proj(reset * skip))
        return skip + update * (candidate - skip)  # (1 − z)·skip + z·h, written out for autocast


# ---------------------------------------------------------------------------------------------------
# Linear blocks (linear_block_type)
# ---------------------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """norm(act(W x) + skip), dropout, mask."""

    def __init__(self, in_dim: int, out_dim: int, options: Options, skip: bool):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.activation = _activation(options.linear_activation, out_dim)
        self.residual = _Residual(in_dim, out_dim) if skip else None
        self.norm = _Norm(options.normalization, out_dim)
        self.dropout = _dropout(options.dropout)
        self.masking = options.masking

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        y = self.activation(self.linear(x))
        if self.residual is not None:
            y = y + self.residual(x)
        return _apply_mask(self.dropout(self.norm(y, mask)), mask, self.masking)


class _NormFirstLinear(nn.Module):
    """act(norm(W x) [+ residual]) with a bias-free W, dropout, mask (the halves of a Resnet block)."""

    def __init__(self, in_dim: int, out_dim: int, options: Options, skip: bool, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.norm = _Norm(options.normalization, out_dim)
        self.activation = _activation(options.linear_activation, out_dim)
        self.dropout = _dropout(dropout)
        self.skip = skip
        self.masking = options.masking

    def forward(self, x: Tensor, mask: Tensor | None, residual: Tensor) -> Tensor:
        y = self.norm(self.linear(x), mask)
        if self.skip:
            y = y + residual
        return _apply_mask(self.dropout(self.activation(y)), mask, self.masking)


class _ResnetBlock(nn.Module):
    """h = NormFirst(x) (no skip, no dropout); out = NormFirst(h) + h."""

    def __init__(self, in_dim: int, out_dim: int, options: Options, skip: bool):
        super().__init__()
        self.first = _NormFirstLinear(in_dim, out_dim, options, skip=False, dropout=0.0)
        self.second = _NormFirstLinear(out_dim, out_dim, options, skip=skip, dropout=options.dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        hidden = self.first(x, mask, x)
        return self.second(hidden, mask, hidden)


class _GatedBlock(nn.Module):
    """GLU(W1 act(W2 x)) (+ skip), norm, mask; W2 expands to transformer_dim_scale × in_dim."""

    def __init__(self, in_dim: int, out_dim: int, options: Options, skip: bool):
        super().__init__()
        hidden = int(round(options.transformer_dim_scale * in_dim))
        self.expand = nn.Linear(in_dim, hidden)
        self.activation = _activation(options.linear_activation, hidden)
        self.project = nn.Linear(hidden, out_dim)
        self.dropout = _dropout(options.dropout)
        self.glu_gate = nn.Linear(out_dim, out_dim)
        self.glu_value = nn.Linear(out_dim, out_dim)
        self.residual = _Residual(in_dim, out_dim) if skip else None
        self.norm = _Norm(options.normalization, out_dim)
        self.masking = options.masking

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        y = self.dropout(self.project(self.activation(self.expand(x))))
        y = torch.sigmoid(self.glu_gate(y)) * self.glu_value(y)
        if self.residual is not None:
            y = y + self.residual(x)
        return _apply_mask(self.norm(y, mask), mask, self.masking)


class _GRUBlock(nn.Module):
    """Pre-norm MLP (in → scale·in → out, activation and dropout after each), then GRUGate with the skip."""

    def __init__(self, in_dim: int, out_dim: int, options: Options, skip: bool):
        super().__init__()
        hidden = int(round(options.transformer_dim_scale * in_dim))
        self.norm = _Norm(options.normalization, in_dim)
        self.linear1 = nn.Linear(in_dim, hidden)
        self.activation1 = _activation(options.linear_activation, hidden)
        self.linear2 = nn.Linear(hidden, out_dim)
        self.activation2 = _activation(options.linear_activation, out_dim)
        self.dropout = _dropout(options.dropout)
        # Upstream builds the gate (and a skip projection) even without skip connections, unused; SPANet2
        # builds only what the forward pass uses (unused parameters break DDP without find_unused_parameters).
        self.residual = _Residual(in_dim, out_dim) if skip else None
        self.gate = GRUGate(out_dim) if skip else None
        self.masking = options.masking

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        y = self.dropout(self.activation1(self.linear1(self.norm(x, mask))))
        y = self.dropout(self.activation2(self.linear2(y)))
        if self.gate is not None:
            y = self.gate(y, self.residual(x))
        return _apply_mask(y, mask, self.masking)


_BLOCKS = {"Basic": _BasicBlock, "Resnet": _ResnetBlock, "Gated": _GatedBlock, "GRU": _GRUBlock}


def linear_block(in_dim: int, out_dim: int, options: Options, *, skip: bool) -> nn.Module:
    """One linear block of `options.linear_block_type`, called as block(x (..., in_dim), mask (...) | None)."""
    if options.linear_block_type not in _BLOCKS:
        raise ConfigError(None, "linear_block_type", f"expected one of {list(_BLOCKS)}, got {options.linear_block_type!r}")
    return _BLOCKS[options.linear_block_type](in_dim, out_dim, options, skip)


class _LinearStack(nn.Module):
    """Blocks applied in turn: widths `dims` from `in_dim` (an empty stack is the identity)."""

    def __init__(self, in_dim: int, dims: list[int], options: Options, *, skip: bool):
        super().__init__()
        blocks = []
        for out_dim in dims:
            blocks.append(linear_block(in_dim, out_dim, options, skip=skip))
            in_dim = out_dim
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x


# ---------------------------------------------------------------------------------------------------
# Transformers (transformer_type)
# ---------------------------------------------------------------------------------------------------


class _SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding bias (torch.nn.MultiheadAttention's parameters and init)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout_p = dropout
        self.weight_dropout = _dropout(dropout)  # on the attention weights (the CPU path)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, attn_bias: Tensor) -> Tensor:
        """x (B, L, D), attn_bias (B, 1, 1, L) additive (0 or −inf) → (B, L, D)."""
        batch, length, dim = x.shape
        heads, head_dim = self.heads, dim // self.heads
        qkv = self.qkv(x).view(batch, length, 3, heads, head_dim)  # (B, L, 3, H, Dh)
        attn_bias = attn_bias.to(qkv.dtype)  # autocast: the bias must match q's dtype
        p = self.dropout_p if self.training else 0.0
        if x.is_cuda or FUSED_ATTENTION_ON_CPU:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=p)  # (B, H, L, Dh)
        else:
            q, k, v = (
                qkv.permute(2, 0, 3, 1, 4).reshape(3, batch * heads, length, head_dim).unbind(0)
            )  # (B·H, L, Dh)
            bias = attn_bias.expand(batch, heads, 1, length).reshape(batch * heads, 1, length)  # (B·H, 1, L)
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=head_dim**-0.5)  # (B·H, L, L)
            # softmax written out: torch.softmax over a 12-wide last axis is slow on CPU
            weights = (scores - scores.amax(dim=-1, keepdim=True).detach()).exp()
            weights = weights / weights.sum(dim=-1, keepdim=True)
            weights = self.weight_dropout(weights)
            out = torch.bmm(weights, v).view(batch, heads, length, head_dim)  # (B, H, L, Dh)
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerLayer(nn.Module):
    """One encoder layer on (B, L, D) with a key-padding bias and the real-vector mask (B, L).

    Gated (GTrXL): x ← GRUGate(attention(LayerNorm(x)), x), then a GRU linear block (pre-norm MLP + gate).
    Standard: post-norm residuals (torch's TransformerEncoderLayer); NormFirst: pre-norm residuals.
    """

    def __init__(self, options: Options):
        super().__init__()
        dim = options.hidden_dim
        self.kind = options.transformer_type
        self.attention = _SelfAttention(dim, options.num_attention_heads, options.dropout)
        self.norm1 = nn.LayerNorm(dim)
        if self.kind == "Gated":
            self.attention_gate = GRUGate(dim)
            self.feed_forward = _GRUBlock(dim, dim, options, skip=True)
        else:
            ff_dim = int(round(options.transformer_dim_scale * dim))
            self.ff1 = nn.Linear(dim, ff_dim)
            self.ff2 = nn.Linear(ff_dim, dim)
            self.activation = nn.GELU() if options.transformer_activation == "gelu" else nn.ReLU()
            self.norm2 = nn.LayerNorm(dim)
            self.dropout = _dropout(options.dropout)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.ff2(self.dropout(self.activation(self.ff1(x)))))

    def forward(self, x: Tensor, attn_bias: Tensor, mask: Tensor) -> Tensor:
        if self.kind == "Gated":
            x = self.attention_gate(self.attention(self.norm1(x), attn_bias), x)
            return self.feed_forward(x, mask)
        if self.kind == "Standard":
            x = self.norm1(x + self.dropout(self.attention(x, attn_bias)))
            return self.norm2(x + self._feed_forward(x))
        x = x + self.dropout(self.attention(self.norm1(x), attn_bias))
        return x + self._feed_forward(self.norm2(x))


class _StackedEncoder(nn.Module):
    """Linear stack on the vectors, then a transformer over [token, vectors]; returns (vectors, token).

    The token (upstream's "particle vector", N(0, 1) at initialisation) summarises the sequence: it is the
    event vector of the central encoder and the particle / daughter vector of the branches.
    """

    def __init__(self, options: Options, n_linear: int, n_layers: int):
        super().__init__()
        dim = options.hidden_dim
        self.masking = options.masking
        self.token = nn.Parameter(torch.randn(dim))
        self.embedding = _LinearStack(dim, [dim] * n_linear, options, skip=options.skip_connections)
        self.layers = nn.ModuleList(TransformerLayer(options) for _ in range(n_layers))

    def forward(self, x: Tensor, padding: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, D); padding (B, L) True for padding (attention keys); mask (B, L) real vectors (zeroing)."""
        x = self.embedding(x, mask)
        batch = x.shape[0]
        x = torch.cat([self.token.to(x.dtype).expand(batch, 1, -1), x], dim=1)  # (B, 1 + L, D)
        if len(self.layers):
            ones = torch.ones(batch, 1, dtype=torch.bool, device=x.device)
            full_mask = torch.cat([ones, mask], dim=1)
            bias = torch.zeros(batch, 1 + padding.shape[1], dtype=x.dtype, device=x.device)
            bias[:, 1:] = bias[:, 1:].masked_fill(padding, float("-inf"))
            bias = bias[:, None, None, :]  # (B, 1, 1, 1 + L) additive key-padding bias
            for layer in self.layers:
                x = layer(x, bias, full_mask)
            if self.layers[0].kind != "Gated":  # the gated layers mask inside their GRU block
                x = _apply_mask(x, full_mask, self.masking)
        return x[:, 1:], x[:, 0]


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


class InputNormalizer(nn.Module):
    """log(x+1) on the log features, then (x − mean)/std; statistics are buffers (saved with the model)."""

    def __init__(self, stats_log: list[bool], mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("log_scale", torch.tensor(stats_log, dtype=torch.bool))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (..., F) raw features, mask (...) bool → normalised (..., F); padded vectors become 0."""
        x = torch.where(self.log_scale, torch.log1p(x.clamp_min(0.0)), x)
        x = (x - self.mean) / self.std
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        return x


class _InputEmbedding(nn.Module):
    """One input: normalise, embed in → initial → … → D, append the input's learned position vector (P)."""

    def __init__(self, stats, options: Options):
        super().__init__()
        log_scale, _, mean, std = stats.as_arrays()
        self.normalizer = InputNormalizer(log_scale.tolist(), mean.tolist(), std.tolist())
        dims = embedding_dims(options.initial_embedding_dim, options.hidden_dim, options.num_embedding_layers)
        self.stack = _LinearStack(
            len(stats.features), dims, options, skip=options.initial_embedding_skip_connections
        )
        self.position = nn.Parameter(torch.randn(options.position_embedding_dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, F), mask (B, L) → (B, L, D + P)."""
        hidden = self.stack(self.normalizer(x, mask), mask)
        position = self.position.to(hidden.dtype).expand(*hidden.shape[:-1], -1)
        return torch.cat([hidden, position], dim=-1)


class _Embedding(nn.Module):
    """All inputs: per-input embeddings joined into one sequence, then one shared block D + P → D."""

    def __init__(self, names: list[str], normalization: NormalizationStats, options: Options):
        super().__init__()
        self.inputs = nn.ModuleDict({name: _InputEmbedding(normalization.inputs[name], options) for name in names})
        self.final = linear_block(
            options.hidden_dim + options.position_embedding_dim,
            options.hidden_dim,
            options,
            skip=options.skip_connections,
        )

    def forward(self, values: list[Tensor], masks: list[Tensor]) -> Tensor:
        parts = [emb(x, m) for emb, x, m in zip(self.inputs.values(), values, masks, strict=True)]
        mask = torch.cat(masks, dim=1)
        return self.final(torch.cat(parts, dim=1), mask)


# ---------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------


class _VectorHead(nn.Module):
    """Linear stack on one vector per event, BatchNorm, linear to `n_out` (upstream's BranchLinear)."""

    def __init__(self, options: Options, n_layers: int, n_out: int):
        super().__init__()
        dim = options.hidden_dim
        self.stack = _LinearStack(dim, [dim] * n_layers, options, skip=options.skip_connections)
        self.norm = nn.BatchNorm1d(dim)
        self.out = nn.Linear(dim, n_out)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.stack(x)
        if self.training and hidden.shape[0] == 1:  # batch statistics of one event are undefined
            hidden = F.batch_norm(
                hidden, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias
            )
        else:
            hidden = self.norm(hidden)
        return self.out(hidden)


class _ParticleBranch(nn.Module):
    """One particle: branch encoder (particle vector → detection), daughter encoders, symmetric attention."""

    def __init__(self, options: Options, *, symmetric: bool, n_daughters: int):
        super().__init__()
        dim = options.hidden_dim
        if n_daughters != 2:
            raise ConfigError(
                None, "EVENT", f"SPANet2 attention supports particles with 2 daughters, not {n_daughters}"
            )
        self.dim = dim
        self.symmetric = symmetric
        self.split = options.split_symmetric_attention
        self.masking = options.masking
        self.encoder = _StackedEncoder(options, options.num_branch_embedding_layers, options.num_branch_encoder_layers)
        self.detector = _VectorHead(options, options.num_detector_layers, 1)
        if self.split:
            self.daughter_encoders = nn.ModuleList(
                _StackedEncoder(options, options.num_jet_embedding_layers, options.num_jet_encoder_layers)
                for _ in range(n_daughters)
            )
            self.daughter_projections = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_daughters))
            for projection in self.daughter_projections:
                nn.init.xavier_uniform_(projection.weight)
        else:
            self.weight = nn.Parameter(torch.empty(dim, dim))
            nn.init.xavier_uniform_(self.weight)

    def forward(
        self, hidden: Tensor, padding: Tensor, mask: Tensor, n_jets: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """hidden (B, L, D) central output (J jets, then globals); padding / mask (B, L).

        Returns (log_probs (B, J, J), detection_logit (B,), particle_vector (B, D), daughters (B, 2, D)).
        """
        encoded, particle_vector = self.encoder(hidden, padding, mask)  # (B, L, D), (B, D)
        detection = self.detector(particle_vector).squeeze(-1)  # (B,)
        jets, jet_padding, jet_mask = encoded[:, :n_jets], padding[:, :n_jets], mask[:, :n_jets]
        if self.split:
            ys, daughters = [], []
            for encoder, projection in zip(self.daughter_encoders, self.daughter_projections, strict=True):
                vectors, daughter = encoder(jets, jet_padding, jet_mask)
                ys.append(_apply_mask(projection(vectors), jet_mask, self.masking))  # (B, J, D)
                daughters.append(daughter)
            logits = torch.bmm(ys[0], ys[1].transpose(1, 2)) / self.dim  # (B, J, J)
            daughter_vectors = torch.stack(daughters, dim=1)  # (B, 2, D)
        else:
            weight = 0.5 * (self.weight + self.weight.t()) if self.symmetric else self.weight
            logits = torch.bmm(jets @ weight.to(jets.dtype), jets.transpose(1, 2)) / self.dim
            daughter_vectors = jets.new_zeros(jets.shape[0], 2, self.dim)
        if self.symmetric:
            logits = 0.5 * (logits + logits.transpose(1, 2))  # average over the daughter group: exact symmetry
        return _masked_pair_log_softmax(logits, jet_mask), detection, particle_vector, daughter_vectors


def _masked_pair_log_softmax(logits: Tensor, jet_mask: Tensor) -> Tensor:
    """log-softmax over all J² cells; cells with padding or i == j → −inf (all −inf when no valid pair)."""
    batch, n_jets, _ = logits.shape
    eye = torch.eye(n_jets, dtype=torch.bool, device=logits.device)
    valid = jet_mask.unsqueeze(2) & jet_mask.unsqueeze(1) & ~eye  # (B, J, J)
    has_pair = valid.flatten(1).any(dim=1)  # (B,)
    # Events without any valid pair get finite logits for the softmax (no NaN), then −inf everywhere.
    safe_valid = valid | ~has_pair[:, None, None]
    masked = logits.float().masked_fill(~safe_valid, float("-inf"))
    log_probs = (
        masked.view(batch, n_jets * n_jets).log_softmax(dim=-1).view(batch, n_jets, n_jets)
    )  # (B, J, J)
    return log_probs.masked_fill(~valid, float("-inf"))


# ---------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------


class SPANet2(nn.Module):
    """The SPANet2 network for one EventTopology (any sequential/global inputs; particles with two daughters).

    Build with `SPANet2(options, topology, normalization)`; everything needed to rebuild it is
    options.json + the event YAML + normalization.json (`model.normalization`). Top-level modules, as
    upstream's: `embedding`, `encoder`, `branches` (upstream's branch decoders), `classifiers`.
    """

    def __init__(self, options: Options, topology: EventTopology, normalization: NormalizationStats):
        super().__init__()
        self.options = options
        self.topology = topology
        self.normalization = normalization
        self.sequential_names = [s.name for s in topology.sequential_inputs]
        self.global_names = [s.name for s in topology.global_inputs]
        if topology.relative_inputs:
            raise ConfigError(
                topology.path, "INPUTS/RELATIVE", "RELATIVE inputs are not supported by SPANet2"
            )
        missing = [n for n in self.sequential_names + self.global_names if n not in normalization.inputs]
        if missing:
            raise ConfigError(None, "inputs", f"normalisation statistics lack inputs {missing}")
        self.embedding = _Embedding(self.sequential_names + self.global_names, normalization, options)
        self.encoder = _StackedEncoder(options, 0, options.num_encoder_layers)
        self.particle_names = list(topology.particle_names)
        self.branches = nn.ModuleDict(
            {
                particle.name: _ParticleBranch(
                    options,
                    symmetric=len(topology.daughter_permutation_group(particle.name)) > 1,
                    n_daughters=len(particle.daughters),
                )
                for particle in topology.particles
            }
        )
        self.classification_names = classification_keys(topology)
        self.classifiers = nn.ModuleDict(
            {
                name.replace("/", ":"): _VectorHead(
                    options,
                    options.num_classification_layers,
                    normalization.classification_classes.get(name, 2),
                )
                for name in self.classification_names
            }
        )
        if topology.regressions and options.regression_loss_scale > 0:
            log.warning("regression heads are not implemented in SPANet2; REGRESSIONS are ignored")

    def forward(self, batch: Batch) -> ModelOutputs:
        """batch: {"sequential": {name: (B, J, F)}, "sequential_mask": {name: (B, J) bool}, "global": {name: (B, F)}}."""
        values, padding = [], []
        for name in self.sequential_names:
            values.append(batch["sequential"][name])
            padding.append(~batch["sequential_mask"][name])
        n_jets = sum(v.shape[1] for v in values)
        for name in self.global_names:
            x = batch["global"][name]
            x = x.unsqueeze(-1) if x.dim() == 1 else x  # (B,) → (B, 1)
            values.append(x.unsqueeze(1))  # (B, 1, F): one slot per global input
            padding.append(torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device))
        masks = [~p for p in padding]
        if not self.options.mask_sequence_vectors:  # upstream: linear blocks see every slot as real
            masks = [torch.ones_like(m) for m in masks]
        hidden = self.embedding(values, masks)  # (B, L, D)
        padding_all, mask_all = torch.cat(padding, dim=1), torch.cat(masks, dim=1)
        hidden, event_vector = self.encoder(hidden, padding_all, mask_all)

        log_probs, detections, particle_vectors, daughter_vectors = [], [], [], []
        for name in self.particle_names:
            lp, det, vec, daughters = self.branches[name](hidden, padding_all, mask_all, n_jets)
            log_probs.append(lp)
            detections.append(det)
            particle_vectors.append(vec)
            daughter_vectors.append(daughters)
        classification = {
            name: self.classifiers[name.replace("/", ":")](event_vector) for name in self.classification_names
        }
        return ModelOutputs(
            assignment_log_probs=log_probs,
            detection_logits=torch.stack(detections, dim=1),  # (B, P)
            classification_logits=classification,
            event_vector=event_vector,
            particle_vectors=torch.stack(particle_vectors, dim=1),  # (B, P, D)
            daughter_vectors=torch.stack(daughter_vectors, dim=1),  # (B, P, 2, D)
        )


def parameter_counts(model: SPANet2) -> dict[str, int]:
    """Trainable parameters per top-level module (upstream's names in brackets) and in total.

    embedding (embedding), encoder (encoder), branches (branch_decoders), classifiers (classification_decoder).
    """
    counts = {
        name: sum(p.numel() for p in getattr(model, name).parameters() if p.requires_grad)
        for name in ("embedding", "encoder", "branches", "classifiers")
    }
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
