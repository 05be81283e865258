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

Speed on CPU, with the same arithmetic: a batch runs in jet-multiplicity groups, each trimmed of its padding
(generated HH → 4b events fill about 5 of 10 jet slots; upstream computes on all of them), the heads with a
BatchNorm over events still see the whole batch, so outputs and gradients equal the padded network's
(tests/training/test_tr_model.py checks them in float64). The small tuned dropout (p = 0.0059) draws only the
dropped elements and folds its 1/(1 − p) into the next linear map.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import os
import threading
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

# Batches are split by jet multiplicity on CPU (SPANet2.forward). Each group is a pass of its own through
# the network, whose fixed cost (~10k operator calls of a few microseconds each, forward and backward) is
# about that of this many event × vector slots at hidden_dim 32; the grouping weighs it against padding.
GROUP_COST_SLOTS = 512

# torch's CPU bmm multiplies matrices with rows · inner · columns < 400 in a plain loop, ~4x slower per
# matrix than its BLAS path (76 vs 396 ns for 7×8 @ 8×7 against 7×9 @ 9×7, 1 thread). Short sequences
# (≤ 7 tokens at head width 8) fall below it, so the CPU attention widens its heads with zero columns
# where that costs less than it saves (`_head_width`); the products are unchanged.
SMALL_BMM_PRODUCT = 400

# With more than one torch thread, the multiplicity groups of a training batch run side by side, one worker
# thread each (one torch thread per worker), forward and backward (`_ParallelGroups`): the groups' operations are
# too small for torch's own threads to share well (two threads gave ~1.4x one thread; the groups side by side
# give ~1.35x more). The state of each worker's dropout stream is drawn from the global generator, so a seed
# still fixes the result for a given number of threads.
PARALLEL_GROUPS = True
MAX_GROUP_WORKERS = 4  # beyond this the workers' Python would contend for the GIL (measured only up to 2 cores)
_WORKER = threading.local()  # .generator: the dropout stream of a _ParallelGroups worker

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


# activations whose backward pass needs their input, not their output (their output may be changed in place)
_INPUT_SAVING = ("GELU", "PReLU", "None", "Identity")


class _PReLU(nn.PReLU):
    """PReLU with one slope per feature of (..., D): torch's PReLU takes dim 1 as the channels, upstream
    applies it to (vectors, D) matrices."""

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x.reshape(-1, x.shape[-1]), self.weight).view_as(x)


def _activation(name: str, dim: int) -> nn.Module:
    table = {"ReLU": nn.ReLU, "ELU": nn.ELU, "CELU": nn.CELU, "GELU": nn.GELU}
    if name == "PReLU":
        return _PReLU(dim)  # one slope per channel, as upstream
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

    @property
    def scale(self) -> float:
        """The factor 1/(1 − p) on the kept values in training (1 in evaluation)."""
        return 1.0 / (1.0 - self.p) if self.training else 1.0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        scale = torch.full((x.numel(),), self.scale, dtype=x.dtype, device=x.device)
        scale[self._dropped(x.numel(), x.device)] = 0.0
        return x * scale.view_as(x)

    def zero_in_place(self, x: Tensor) -> Tensor:
        """The dropout without the 1/(1 − p) rescaling, which the caller folds into what follows (a linear
        map's weights, a softmax's normaliser) so that no pass over x is spent on it. Zeroes x's dropped
        elements in place: x must be contiguous and not saved by the operation that made it (GELU, PReLU,
        a linear map or a division are fine; ReLU, which saves its output, is not)."""
        if not self.training:
            return x
        return _ZeroAt.apply(x, self._dropped(x.numel(), x.device))

    def _dropped(self, n: int, device: torch.device) -> Tensor:
        """Flat indices of the dropped elements among n: i.i.d. Bernoulli(p) from geometric gaps."""
        expected = n * self.p
        draws = int(expected + 6.0 * math.sqrt(expected) + 16)  # enough gaps to cover n with overwhelming odds
        generator = getattr(_WORKER, "generator", None)  # a worker of _ParallelGroups draws from its own stream
        positions = torch.empty(draws, device=device).geometric_(self.p, generator=generator).cumsum_(0) - 1.0
        while positions[-1] < n:  # astronomically rare: draw more gaps
            more = torch.empty(draws, device=device).geometric_(self.p, generator=generator).cumsum_(0) + positions[-1]
            positions = torch.cat([positions, more])
        return positions[positions < n].long()


class _ZeroAt(torch.autograd.Function):
    """x.view(-1)[index] = 0 in place; the gradient is zeroed at the same elements."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:  # noqa: D102
        x.view(-1).index_fill_(0, index, 0.0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(index)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        (index,) = ctx.saved_tensors
        return grad.reshape(-1).index_fill(0, index, 0.0).view_as(grad), None


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

    def forward(self, x: Tensor, skip: Tensor, x_scale: float = 1.0) -> Tensor:
        """The gate on x_scale · x (a dropout's rescaling folded into W_r | W_z | W_g).

        Written as few passes over the (vectors, D) tensors as possible (on CPU at hidden 32 the gates'
        element-wise work, not their matrix products, is what costs): each pre-activation is one addmm from a
        slice of the weights, with the U product accumulated in place (no split of a fused output, whose
        backward would concatenate), b_g is folded into the bias of W_z, and (1 − z)·s + z·h is one lerp.
        """
        shape, dim = skip.shape, self.dim
        x, skip = x.reshape(-1, dim), skip.to(x.dtype).reshape(-1, dim)
        weight, bias = self.input_proj.weight, self.input_proj.bias
        if x_scale != 1.0:
            weight = weight * x_scale
        w_r, w_z, w_g = weight.split(dim)
        u_r, u_z = self.skip_proj.weight.split(dim)
        reset = torch.sigmoid(_plus_product(torch.addmm(bias[:dim], x, w_r.t()), skip, u_r))
        update = torch.sigmoid(_plus_product(torch.addmm(bias[dim : 2 * dim] - self.gate_bias, x, w_z.t()), skip, u_z))
        candidate = torch.tanh(
            _plus_product(torch.addmm(bias[2 * dim :], x, w_g.t()), reset * skip, self.candidate_proj.weight)
        )
        # (1 − z)·skip + z·h; lerp does not promote, and autocast leaves skip in float32 and h, z in bfloat16
        return torch.lerp(skip, candidate.to(skip.dtype), update.to(skip.dtype)).view(shape)


def _plus_product(pre: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """pre += x Wᵀ in place (pre is a fresh addmm output, which its backward does not need). In-place ops are
    not autocast: the operands take pre's dtype."""
    return pre.addmm_(x.to(pre.dtype), weight.t().to(pre.dtype))


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
        # SparseDropout's rescaling can be folded into the next linear map where the activations do not save
        # their outputs for the backward pass (so that zeroing them in place is allowed)
        self.fold_dropout = isinstance(self.dropout, SparseDropout) and options.linear_activation in _INPUT_SAVING

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.training and self.fold_dropout:
            return self._forward_folded(x, mask)
        y = self.dropout(self.activation1(self.linear1(self.norm(x, mask))))
        y = self.dropout(self.activation2(self.linear2(y)))
        if self.gate is not None:
            y = self.gate(y, self.residual(x))
        return _apply_mask(y, mask, self.masking)

    def _forward_folded(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """The same block with SparseDropout's 1/(1 − p) folded into the next linear map's weights (the
        dropped elements are zeroed in place): the same arithmetic, three passes over the tensors fewer."""
        dropout, scale = self.dropout, self.dropout.scale
        y = dropout.zero_in_place(self.activation1(self.linear1(self.norm(x, mask))))
        y = dropout.zero_in_place(self.activation2(F.linear(y, self.linear2.weight * scale, self.linear2.bias)))
        if self.gate is not None:
            return _apply_mask(self.gate(y, self.residual(x), x_scale=scale), mask, self.masking)
        return _apply_mask(y * scale, mask, self.masking)


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

    def forward(self, x: Tensor, attn_bias: Tensor | None) -> Tensor:
        """x (B, L, D), attn_bias (B, 1, 1, L) additive (0 or −inf), None without padding → (B, L, D)."""
        batch, length, dim = x.shape
        heads, head_dim = self.heads, dim // self.heads
        p = self.dropout_p if self.training else 0.0
        if x.is_cuda or FUSED_ATTENTION_ON_CPU:
            qkv = self.qkv(x).view(batch, length, 3, heads, head_dim)  # (B, L, 3, H, Dh)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
            if attn_bias is not None:
                attn_bias = attn_bias.to(q.dtype)  # autocast: the bias must match q's dtype
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=p)  # (B, H, L, Dh)
            return self.out(out.transpose(1, 2).reshape(batch, length, dim))
        # Heads widened with zero columns (zero rows of W_q, W_k, W_v; zero columns of W_out) where torch's
        # bmm would otherwise take its slow small-matrix loop: the same dot products, a faster kernel.
        width = _head_width(length, head_dim)
        weight, bias = self.qkv.weight.view(3, heads, head_dim, dim), self.qkv.bias.view(3, heads, head_dim)
        q, k, v = (  # three maps, not one split three ways: its backward would stack the three gradients
            F.linear(x, w.reshape(-1, dim), b.reshape(-1))
            .view(batch, length, heads, width)
            .transpose(1, 2)
            .reshape(batch * heads, length, width)
            for w, b in zip(_widen(weight, width, 2), _widen(bias, width, 2), strict=True)
        )  # each (B·H, L, W)
        if attn_bias is None:
            scores = torch.bmm(q, k.transpose(1, 2)).mul_(head_dim**-0.5)  # (B·H, L, L)
        else:
            key_bias = attn_bias.to(q.dtype).expand(batch, heads, 1, length).reshape(batch * heads, 1, length)
            scores = torch.baddbmm(key_bias, q, k.transpose(1, 2), alpha=head_dim**-0.5)  # (B·H, L, L)
        # softmax written out: torch.softmax over a 12-wide last axis is slow on CPU
        weights = (scores - scores.amax(dim=-1, keepdim=True).detach()).exp()
        if isinstance(self.weight_dropout, SparseDropout):  # its 1/(1 − p) folded into the normaliser
            norm = weights.sum(dim=-1, keepdim=True) * (1.0 / self.weight_dropout.scale)
            weights = self.weight_dropout.zero_in_place(weights / norm)
        else:
            weights = self.weight_dropout(weights / weights.sum(dim=-1, keepdim=True))
        out = torch.bmm(weights, v).view(batch, heads, length, width).transpose(1, 2)  # (B, L, H, W)
        out_weight = _widen(self.out.weight.view(dim, heads, head_dim), width, 2).reshape(dim, heads * width)
        return F.linear(out.reshape(batch, length, heads * width), out_weight, self.out.bias)


def _head_width(length: int, head_dim: int) -> int:
    """The head width for the CPU attention over `length` tokens: widened with zeros up to torch's BLAS bmm
    (width · length² ≥ SMALL_BMM_PRODUCT) where that pays. Measured on one gated layer, forward and backward,
    hidden 32, 1 thread: length 7 (width 9) 1.34x, length 6 (width 12) 1.19x; widening to 2 × the head width
    (length 5) did not pay (0.91x)."""
    need = -(-SMALL_BMM_PRODUCT // (length * length))  # ceil
    return need if head_dim < need and 2 * need <= 3 * head_dim else head_dim


def _widen(t: Tensor, width: int, dim: int) -> Tensor:
    """t with zeros appended along `dim` up to `width`."""
    extra = width - t.shape[dim]
    if extra <= 0:
        return t
    return torch.cat([t, t.new_zeros(*t.shape[:dim], extra, *t.shape[dim + 1 :])], dim=dim)


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

    def forward(self, x: Tensor, attn_bias: Tensor | None, mask: Tensor | None) -> Tensor:
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

    def forward(self, x: Tensor, padding: Tensor | None, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (B, L, D); padding (B, L) True for padding (attention keys); mask (B, L) real vectors (zeroing).

        padding and mask None: every vector is real (no key bias, no zeroing).
        """
        x = self.embedding(x, mask)
        batch = x.shape[0]
        x = torch.cat([self.token.to(x.dtype).expand(batch, 1, -1), x], dim=1)  # (B, 1 + L, D)
        if len(self.layers):
            full_mask, bias = None, None
            if mask is not None:
                ones = torch.ones(batch, 1, dtype=torch.bool, device=x.device)
                full_mask = torch.cat([ones, mask], dim=1)
            if padding is not None:
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

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, L, F), mask (B, L) or None (all real) → (B, L, D + P)."""
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

    def forward(self, values: list[Tensor], masks: list[Tensor] | None) -> Tensor:
        """masks None: every vector is real."""
        if masks is None:
            parts = [emb(x, None) for emb, x in zip(self.inputs.values(), values, strict=True)]
            return self.final(torch.cat(parts, dim=1), None)
        parts = [emb(x, m) for emb, x, m in zip(self.inputs.values(), values, masks, strict=True)]
        return self.final(torch.cat(parts, dim=1), torch.cat(masks, dim=1))


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
        self, hidden: Tensor, padding: Tensor | None, mask: Tensor | None, n_jets: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """hidden (B, L, D) central output (J jets, then globals); padding / mask (B, L), None if all real.

        Returns (log_probs (B, J, J), particle_vector (B, D), daughters (B, 2, D)); the detection head
        (`self.detector`, with its BatchNorm over the batch) is applied by SPANet2 to the whole batch.
        """
        encoded, particle_vector = self.encoder(hidden, padding, mask)  # (B, L, D), (B, D)
        jets = encoded[:, :n_jets]
        jet_padding = None if padding is None else padding[:, :n_jets]
        jet_mask = None if mask is None else mask[:, :n_jets]
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
        return _masked_pair_log_softmax(logits, jet_mask), particle_vector, daughter_vectors


def _masked_pair_log_softmax(logits: Tensor, jet_mask: Tensor | None) -> Tensor:
    """log-softmax over all J² cells; cells with padding or i == j → −inf (all −inf when no valid pair).

    jet_mask (B, J), None when every jet is real."""
    batch, n_jets, _ = logits.shape
    eye = torch.eye(n_jets, dtype=torch.bool, device=logits.device)
    if jet_mask is None:
        valid = (~eye).expand(batch, n_jets, n_jets)
    else:
        valid = jet_mask.unsqueeze(2) & jet_mask.unsqueeze(1) & ~eye  # (B, J, J)
    has_pair = valid.flatten(1).any(dim=1)  # (B,)
    # Events without any valid pair get finite logits for the softmax (no NaN), then −inf everywhere.
    safe_valid = valid | ~has_pair[:, None, None]
    masked = logits.to(torch.promote_types(logits.dtype, torch.float32)).masked_fill(~safe_valid, float("-inf"))
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
        self.group_by_length = True  # see _groups_by_length; exact, so only a speed switch
        if topology.regressions and options.regression_loss_scale > 0:
            log.warning("regression heads are not implemented in SPANet2; REGRESSIONS are ignored")

    def forward(self, batch: Batch) -> ModelOutputs:
        """batch: {"sequential": {name: (B, J, F)}, "sequential_mask": {name: (B, J) bool}, "global": {name: (B, F)}}."""
        values = [batch["sequential"][name] for name in self.sequential_names]
        real = [batch["sequential_mask"][name] for name in self.sequential_names]
        globals_ = []
        for name in self.global_names:
            x = batch["global"][name]
            globals_.append(x.unsqueeze(-1) if x.dim() == 1 else x)  # (B,) → (B, 1)
        full_lengths = [v.shape[1] for v in values]
        grouping = self._groups_by_length(values)
        groups = self._length_groups(real) if grouping else None
        workers = self._parallel_workers() if grouping else 1
        if workers > 1:
            rows = torch.arange(values[0].shape[0], device=values[0].device)
            groups = _split_groups(groups or [(rows, full_lengths)], workers)
        if groups is None:
            encoded = self._encode(values, real, globals_, grouping and _all_real(real))
        else:
            encode = functools.partial(self._encode_group, values, real, globals_, full_lengths)
            if workers > 1:
                parts = _encode_in_workers(encode, groups, workers, 1 + len(self.global_names), self)
            else:
                parts = [encode(group) for group in groups]
            order = torch.cat([rows for rows, _ in groups])
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            encoded = [[torch.cat(column)[inverse] for column in zip(*field, strict=True)] for field in zip(*parts, strict=True)]
        log_probs, (event_vector,), particle_vectors, daughter_vectors = encoded
        detections = [
            self.branches[name].detector(vector).squeeze(-1)
            for name, vector in zip(self.particle_names, particle_vectors, strict=True)
        ]
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

    def _encode_group(
        self,
        values: list[Tensor],
        real: list[Tensor],
        globals_: list[Tensor],
        full_lengths: list[int],
        group: tuple[Tensor, list[int]],
    ) -> list[list[Tensor]]:
        """`_encode` for one multiplicity group (event rows, trimmed length per input), its assignments put back
        on the full grid."""
        rows, lengths = group
        trimmed = [m[rows, :n] for m, n in zip(real, lengths, strict=True)]
        part = self._encode(
            [v[rows, :n] for v, n in zip(values, lengths, strict=True)],
            trimmed,
            [g[rows] for g in globals_],
            _all_real(trimmed),
        )
        return _pad_assignments(part, lengths, full_lengths)

    def _parallel_workers(self) -> int:
        """How many worker threads run the multiplicity groups side by side (1: none, see PARALLEL_GROUPS).

        Off under autocast (its state is per thread) and with dropout drawn by torch (p ≥ 0.05: nn.Dropout
        has no generator argument, so the workers' draws would depend on their timing)."""
        if not PARALLEL_GROUPS or torch.is_autocast_enabled("cpu"):
            return 1
        if self.training and SPARSE_DROPOUT_BELOW <= self.options.dropout:
            return 1
        return min(torch.get_num_threads(), MAX_GROUP_WORKERS)

    def _encode(
        self, values: list[Tensor], real: list[Tensor], globals_: list[Tensor], all_real: bool
    ) -> list[list[Tensor]]:
        """Everything per event (embedding, central encoder, branches) for one set of events; all_real: no slot
        is padding, so the masking and the attention key bias are left out (the same arithmetic, fewer passes).

        Returns [log_probs per particle (B, J, J)], [event_vector (B, D)], [particle vector per particle
        (B, D)], [daughter vectors per particle (B, 2, D)]. The heads with a BatchNorm over events are not
        here: they see the whole batch at once (see `forward`).
        """
        n_jets = sum(v.shape[1] for v in values)
        values = values + [x.unsqueeze(1) for x in globals_]  # (B, 1, F): one slot per global input
        masks, padding_all, mask_all = None, None, None
        if not all_real:
            padding = [~m for m in real]
            padding += [torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device) for x in globals_]
            masks = [~p for p in padding]
            if not self.options.mask_sequence_vectors:  # upstream: linear blocks see every slot as real
                masks = [torch.ones_like(m) for m in masks]
            padding_all, mask_all = torch.cat(padding, dim=1), torch.cat(masks, dim=1)
        hidden = self.embedding(values, masks)  # (B, L, D)
        hidden, event_vector = self.encoder(hidden, padding_all, mask_all)
        branches = [self.branches[name](hidden, padding_all, mask_all, n_jets) for name in self.particle_names]
        log_probs, particle_vectors, daughter_vectors = (list(column) for column in zip(*branches, strict=True))
        return [log_probs, [event_vector], particle_vectors, daughter_vectors]

    def _groups_by_length(self, values: list[Tensor]) -> bool:
        """Whether this forward runs per jet-multiplicity group (see `_length_groups`).

        Exact only when nothing mixes vectors across events or sees padding: per-vector LayerNorm (or none),
        not BatchNorm / MaskedBatchNorm in the blocks. Off on CUDA (the GPU pads for free, and grouping
        would sync with the host every batch), under torch.compile and while tracing for ONNX (data-dependent
        shapes).
        """
        return (
            self.group_by_length
            and bool(values)
            and self.options.normalization in ("LayerNorm", "None")
            and self.options.mask_sequence_vectors  # else padded jets are pair candidates: trimming changes that
            and not values[0].is_cuda
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()  # ONNX export: the graph must not bake in one batch's grouping
        )

    def _length_groups(self, real: list[Tensor]) -> list[tuple[Tensor, list[int]]] | None:
        """Split the batch by jet multiplicity: [(event rows, trimmed length per sequential input)].

        An event's length in one input is its last real slot + 1 (masks need not be left-aligned). Each group
        is trimmed to its longest event; which multiplicities share a group minimises (`_merge_lengths`) the
        work in vector slots plus a fixed cost per group (every group is a pass of its own through the
        network). None when grouping would not trim anything.
        """
        slots = [torch.arange(1, m.shape[1] + 1, device=m.device) for m in real]
        lengths = torch.stack([(m * s).amax(dim=1) for m, s in zip(real, slots, strict=True)], dim=1)  # (B, S)
        keys, inverse, counts = torch.unique(lengths, dim=0, return_inverse=True, return_counts=True)
        keys, counts = keys.tolist(), counts.tolist()
        order = sorted(range(len(keys)), key=lambda k: (sum(keys[k]), keys[k]))
        segments = _merge_lengths([keys[k] for k in order], [counts[k] for k in order], 1 + len(self.global_names))
        if len(segments) == 1 and segments[0][1] == [m.shape[1] for m in real]:
            return None
        groups = []
        for members, trimmed in segments:
            chosen = torch.zeros(len(keys), dtype=torch.bool, device=inverse.device)
            chosen[[order[k] for k in members]] = True
            groups.append((chosen[inverse].nonzero().squeeze(1), [max(n, 1) for n in trimmed]))
        return groups


def _all_real(real: list[Tensor]) -> bool:
    """Whether no slot of the (B, J) masks is padding (asked only where grouping applies: on CUDA it would sync)."""
    return all(bool(m.all()) for m in real)


def _group_cost(events: int, lengths: list[int], extra: int) -> int:
    """Estimated cost of one group's pass, in event × vector slots: GROUP_COST_SLOTS + events × (Σ lengths + extra)."""
    return GROUP_COST_SLOTS + events * (sum(lengths) + extra)


def _merge_lengths(keys: list[list[int]], counts: list[int], extra: int) -> list[tuple[list[int], list[int]]]:
    """Cut the length keys (sorted by total length) into consecutive groups of least estimated cost.

    A group costs GROUP_COST_SLOTS + events × (Σ of its longest length per input + extra slots), `extra`
    being the event token and the global inputs. Dynamic programming over the cut points (a few dozen keys
    at most). Returns [(key indices, trimmed length per input)].
    """
    best, cut = [0.0] + [math.inf] * len(keys), [0] * (len(keys) + 1)
    for end in range(1, len(keys) + 1):
        longest, events = [0] * len(keys[0]), 0
        for start in range(end - 1, -1, -1):  # grow the group [start, end) backwards
            longest = [max(a, b) for a, b in zip(longest, keys[start], strict=True)]
            events += counts[start]
            cost = best[start] + _group_cost(events, longest, extra)
            if cost < best[end]:
                best[end], cut[end] = cost, start
    segments, end = [], len(keys)
    while end > 0:
        start = cut[end]
        members = list(range(start, end))
        segments.append((members, [max(keys[k][s] for k in members) for s in range(len(keys[0]))]))
        end = start
    return segments[::-1]


def _split_groups(groups: list[tuple[Tensor, list[int]]], workers: int) -> list[tuple[Tensor, list[int]]]:
    """At least `workers` groups: the one with most events is halved (same trimmed lengths) until there are."""
    groups = list(groups)
    while len(groups) < workers:
        largest = max(range(len(groups)), key=lambda g: groups[g][0].numel())
        rows, lengths = groups[largest]
        if rows.numel() < 2:
            break
        half = rows.numel() // 2
        groups[largest : largest + 1] = [(rows[:half], lengths), (rows[half:], lengths)]
    return groups


def _bins(costs: list[float], workers: int) -> list[list[int]]:
    """Items of the given costs dealt to at most `workers` bins, the most costly first to the least loaded bin
    (each bin's items in their original order; no empty bins)."""
    loads, bins = [0.0] * workers, [[] for _ in range(workers)]
    for item in sorted(range(len(costs)), key=lambda i: -costs[i]):
        target = min(range(workers), key=lambda b: loads[b])
        bins[target].append(item)
        loads[target] += costs[item]
    return [sorted(b) for b in bins if b]


def _encode_in_workers(encode, groups: list[tuple[Tensor, list[int]]], workers: int, extra: int, model: SPANet2) -> list:
    """`encode` on every group, the groups dealt to `workers` threads by cost (as `_merge_lengths` counts it);
    with gradients through `_ParallelGroups`. Returns the groups' outputs in the groups' order."""
    costs = [_group_cost(rows.numel(), lengths, extra) for rows, lengths in groups]
    bins = _bins(costs, workers)

    def job(members: list[int]) -> list[Tensor]:
        return [t for g in members for field in encode(groups[g]) for t in field]

    jobs = [functools.partial(job, members) for members in bins]
    seeds = torch.randint(0, 2**62, (len(jobs),)).tolist()  # from the global stream: reproducible by seed
    params = [p for p in model.parameters() if p.requires_grad]
    if torch.is_grad_enabled() and params:
        flat = _ParallelGroups.apply(jobs, seeds, *params)
    else:
        flat = [t for result in _in_workers(jobs, seeds, torch.is_grad_enabled()) for t in result]
    n_particles = len(model.particle_names)
    sizes = [n_particles, 1, n_particles, n_particles]  # an `_encode` output's fields
    parts, start = [None] * len(groups), 0
    for g in (g for members in bins for g in members):
        part = []
        for size in sizes:
            part.append(list(flat[start : start + size]))
            start += size
        parts[g] = part
    return parts


class _ParallelGroups(torch.autograd.Function):
    """Jobs (lists of multiplicity groups through `_encode`) in worker threads, forward and backward.

    Each worker builds its own autograd graph in the forward; the backward runs the graphs side by side
    (torch.autograd.grad in each worker) and returns the parameters' gradients summed in bin order, so the result
    does not depend on which worker finished first (concurrent accumulation into .grad would)."""

    @staticmethod
    def forward(ctx, jobs, seeds, *params):  # noqa: D102
        ctx.results = _in_workers(jobs, seeds, grad=True)
        ctx.params = params
        return tuple(t.detach() for result in ctx.results for t in result)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):  # noqa: D102
        results, params = ctx.results, ctx.params
        del ctx.results  # the workers' graphs are freed by their own backward
        chunks, start = [], 0
        for result in results:
            chunks.append(grads[start : start + len(result)])
            start += len(result)

        def job(outputs: list[Tensor], output_grads: tuple) -> tuple:
            pairs = [(o, g) for o, g in zip(outputs, output_grads, strict=True) if g is not None and o.requires_grad]
            if not pairs:
                return (None,) * len(params)
            return torch.autograd.grad([o for o, _ in pairs], params, [g for _, g in pairs], allow_unused=True)

        per_worker = _in_workers(
            [functools.partial(job, r, c) for r, c in zip(results, chunks, strict=True)], [None] * len(results), grad=True
        )
        summed = []
        for column in zip(*per_worker, strict=True):
            present = [g for g in column if g is not None]
            summed.append(functools.reduce(torch.add, present) if present else None)
        return (None, None, *summed)


_POOL: tuple[int, int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, size, pool): a forked child makes its own


def _in_workers(jobs: list, seeds: list[int | None], grad: bool) -> list:
    """Run the jobs side by side in worker threads (the caller's torch threads shared among them, grad mode
    `grad`, dropout drawn from a generator seeded by the job's seed); their results in the jobs' order."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < len(jobs):
        pool = concurrent.futures.ThreadPoolExecutor(len(jobs), thread_name_prefix="spanet2-group")
        _POOL = (os.getpid(), len(jobs), pool)
    threads, inference = max(1, torch.get_num_threads() // len(jobs)), torch.is_inference_mode_enabled()
    futures = [
        _POOL[2].submit(_work, job, seed, grad, inference, threads) for job, seed in zip(jobs, seeds, strict=True)
    ]
    return [f.result() for f in futures]


def _work(job, seed: int | None, grad: bool, inference: bool, threads: int):
    torch.set_num_threads(threads)  # per thread: the calling thread keeps its own setting
    _WORKER.generator = None if seed is None else torch.Generator().manual_seed(seed)
    try:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):  # the caller's modes (per thread)
            return job()
    finally:
        _WORKER.generator = None


def _pad_assignments(encoded: list[list[Tensor]], lengths: list[int], full: list[int]) -> list[list[Tensor]]:
    """One group's `_encode` output with its (B, n, n) log-probabilities put back on the full J × J grid (−inf)."""
    if lengths == full:
        return encoded
    offsets = [sum(full[:i]) for i in range(len(full))]
    positions = torch.cat(
        [torch.arange(n, device=encoded[1][0].device) + offset for n, offset in zip(lengths, offsets, strict=True)]
    )  # slot of each trimmed vector on the full grid
    total = sum(full)
    padded = []
    for log_probs in encoded[0]:
        grid = log_probs.new_full((log_probs.shape[0], total, total), float("-inf"))
        grid[:, positions[:, None], positions[None, :]] = log_probs
        padded.append(grid)
    return [padded, *encoded[1:]]


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
