"""SPANet2 network: input embeddings, central transformer, particle branches, symmetric tensor attention."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spanet2.events.errors import ConfigError
from spanet2.events.topology import EventTopology
from spanet2.training.normalization import NormalizationStats
from spanet2.training.options import Options

__all__ = [
    "SPANet2",
    "ModelOutputs",
    "LinearBlock",
    "TransformerBlock",
    "InputNormalizer",
    "embedding_dims",
    "classification_keys",
    "FUSED_ATTENTION_ON_CPU",
]

log = logging.getLogger(__name__)

# On CUDA the attention is torch's fused scaled_dot_product_attention. On CPU, for SPANet's short
# sequences (~12 tokens) the fused CPU kernel pays a large overhead per (event, head); the same
# arithmetic as batched matmuls measured 1.45x faster for inference and 1.2x for training (1 thread,
# hidden_dim 32, batch 2048). Set True to use the fused kernel on CPU as well (same results to 1e-6).
FUSED_ATTENTION_ON_CPU = False

Batch = dict  # {"sequential": {name: (B, J, F)}, "sequential_mask": {name: (B, J) bool}, "global": {name: (B, F)}, ...}


@dataclass
class ModelOutputs:
    """What one forward pass returns.

    assignment_log_probs: one (B, J, J) tensor per particle (topology order): log P(jet i, jet j) over all
        J² cells; cells touching padding and i == j are −inf; exactly symmetric for symmetric daughters.
    detection_logits: (B, P) logit that each particle is reconstructable.
    classification_logits: "EVENT/signal" → (B, C).
    event_vector: (B, D) central summary token; particle_vectors: (B, P, D) branch tokens.
    """

    assignment_log_probs: list[Tensor]
    detection_logits: Tensor
    classification_logits: dict[str, Tensor]
    event_vector: Tensor
    particle_vectors: Tensor


def classification_keys(topology: EventTopology) -> list[str]:
    """Classification head names, e.g. ["EVENT/signal"] (dataset paths without "CLASSIFICATIONS/")."""
    return [p.removeprefix("CLASSIFICATIONS/") for p in topology.classification_paths()]


def embedding_dims(initial_dim: int, hidden_dim: int, max_layers: int) -> list[int]:
    """Output widths of the embedding stack: initial_dim, doubling, capped at hidden_dim; always ends at hidden_dim."""
    dims = [min(initial_dim, hidden_dim)]
    while len(dims) < max_layers and dims[-1] < hidden_dim:
        dims.append(min(2 * dims[-1], hidden_dim))
    if dims[-1] != hidden_dim:
        dims.append(hidden_dim)
    return dims


def _activation(name: str) -> nn.Module:
    table = {"None": nn.Identity, "ReLU": nn.ReLU, "PReLU": nn.PReLU, "ELU": nn.ELU, "GELU": nn.GELU}
    return table[name]()


def _dropout(p: float) -> nn.Module:
    """Dropout, or nothing at p = 0 (a no-op dropout still costs a pass over the tensor in training)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _norm(name: str, dim: int) -> nn.Module:
    if name == "LayerNorm":
        return nn.LayerNorm(dim)
    if name == "None":
        return nn.Identity()
    raise ConfigError(None, "normalization", f"SPANet2 implements 'LayerNorm' and 'None', not {name!r}")


class LinearBlock(nn.Module):
    """One feed-forward block on (..., in_dim) → (..., out_dim); padded vectors are zeroed ("Filling").

    Basic: norm(act(W x) + skip); Resnet: norm(W2 act(W1 x) + skip); Gated: GLU on top of W1;
    GRU: a learned gate z mixes skip and candidate, norm((1 − z) skip + z cand). The skip is x itself, or a
    bias-free projection when the widths differ.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        block_type: str,
        activation: str,
        normalization: str,
        dropout: float,
        skip: bool,
        masking: str = "Filling",
    ):
        super().__init__()
        if block_type not in ("Basic", "Resnet", "Gated", "GRU"):
            raise ConfigError(None, "linear_block_type", f"unknown block type {block_type!r}")
        self.block_type = block_type
        self.skip = skip
        self.masking = masking
        self.linear1 = nn.Linear(in_dim, out_dim)
        self.activation = _activation(activation)
        self.dropout = _dropout(dropout)
        if block_type == "Resnet":
            self.linear2 = nn.Linear(out_dim, out_dim)
        elif block_type == "Gated":
            self.linear2 = nn.Linear(out_dim, 2 * out_dim)
        elif block_type == "GRU":
            self.linear2 = nn.Linear(out_dim, out_dim)
            self.gate = nn.Linear(out_dim, out_dim)
        if skip:
            self.residual = nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim, bias=False)
        self.norm = _norm(normalization, out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (..., in_dim), mask (...) bool or None → (..., out_dim)."""
        hidden = self.dropout(self.activation(self.linear1(x)))
        if self.block_type == "Basic":
            out = hidden
        elif self.block_type == "Resnet":
            out = self.linear2(hidden)
        elif self.block_type == "Gated":
            out = F.glu(self.linear2(hidden), dim=-1)
        else:  # GRU
            candidate = self.linear2(hidden)
            if self.skip:
                gate = torch.sigmoid(self.gate(hidden))
                skip = self.residual(x)
                out = skip + gate * (
                    candidate - skip
                )  # (1 − z)·skip + z·cand (no lerp: mixed dtypes under autocast)
                return self._mask(self.norm(out), mask)
            out = candidate
        if self.skip:
            out = out + self.residual(x)
        return self._mask(self.norm(out), mask)

    def _mask(self, out: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None or self.masking == "None":
            return out
        return out * mask.unsqueeze(-1).to(out.dtype)


class TransformerBlock(nn.Module):
    """Multi-head self-attention (fused `scaled_dot_product_attention` on GPU) + feed-forward on (B, L, D).

    Standard: post-norm residuals; NormFirst: pre-norm residuals; Gated: pre-norm with GRU-style gates
    x ← (1 − z)·x + z·f(x), z = σ(W [x, f(x)]), on both sub-layers.
    """

    def __init__(
        self, dim: int, heads: int, *, ff_scale: float, activation: str, block_type: str, dropout: float
    ):
        super().__init__()
        self.heads = heads
        self.block_type = block_type
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        ff_dim = max(1, int(round(dim * ff_scale)))
        self.ff1 = nn.Linear(dim, ff_dim)
        self.ff2 = nn.Linear(ff_dim, dim)
        self.activation = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = _dropout(dropout)
        if block_type == "Gated":
            self.gate1 = nn.Linear(2 * dim, dim)
            self.gate2 = nn.Linear(2 * dim, dim)

    def _attention(self, x: Tensor, attn_bias: Tensor) -> Tensor:
        batch, length, dim = x.shape
        heads, head_dim = self.heads, dim // self.heads
        qkv = self.qkv(x).view(batch, length, 3, heads, head_dim)  # (B, L, 3, H, Dh)
        attn_bias = attn_bias.to(qkv.dtype)  # autocast: the bias must match q's dtype
        if x.is_cuda or FUSED_ATTENTION_ON_CPU:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (B, H, L, Dh)
        else:
            q, k, v = (
                qkv.permute(2, 0, 3, 1, 4).reshape(3, batch * heads, length, head_dim).unbind(0)
            )  # (B·H, L, Dh)
            bias = attn_bias.expand(batch, heads, 1, length).reshape(batch * heads, 1, length)  # (B·H, 1, L)
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=head_dim**-0.5)  # (B·H, L, L)
            # softmax written out: torch.softmax over a 12-wide last axis is slow on CPU
            weights = (scores - scores.amax(dim=-1, keepdim=True).detach()).exp()
            weights = weights / weights.sum(dim=-1, keepdim=True)
            out = torch.bmm(weights, v).view(batch, heads, length, head_dim)  # (B, H, L, Dh)
        # No dropout on the attention weights: it would take SDPA off its fused kernel.
        out = out.transpose(1, 2).reshape(batch, length, dim)  # (B, L, D)
        return self.dropout(self.attn_out(out))

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.ff2(self.activation(self.ff1(x))))

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """x (B, L, D); attn_mask (B, 1, 1, L) additive key-padding bias (0 or −inf) → (B, L, D)."""
        if self.block_type == "Standard":
            x = self.norm1(x + self._attention(x, attn_mask))
            return self.norm2(x + self._feed_forward(x))
        if self.block_type == "NormFirst":
            x = x + self._attention(self.norm1(x), attn_mask)
            return x + self._feed_forward(self.norm2(x))
        # x + z·(f(x) − x) = (1 − z)·x + z·f(x); written out (not lerp) so autocast's mixed dtypes work
        update = self._attention(self.norm1(x), attn_mask)
        x = x + torch.sigmoid(self.gate1(torch.cat([x, update.to(x.dtype)], dim=-1))) * (update - x)
        update = self._feed_forward(self.norm2(x))
        return x + torch.sigmoid(self.gate2(torch.cat([x, update.to(x.dtype)], dim=-1))) * (update - x)


class Encoder(nn.Module):
    """A stack of TransformerBlocks over (B, L, D) with a key-padding mask (B, L)."""

    def __init__(self, n_layers: int, options: Options):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(
                options.hidden_dim,
                options.num_attention_heads,
                ff_scale=options.transformer_dim_scale,
                activation=options.transformer_activation,
                block_type=options.transformer_type,
                dropout=options.dropout,
            )
            for _ in range(n_layers)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, D), mask (B, L) bool → (B, L, D) with padded vectors zeroed.

        Padded positions are masked as keys, so they never reach a real vector; zeroing them once at the
        end (not after every layer) gives identical real outputs with less memory traffic.
        """
        if not len(self.layers):
            return x * mask.unsqueeze(-1).to(x.dtype)
        attn_mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))
        attn_mask = attn_mask[:, None, None, :]  # (B, 1, 1, L) additive key-padding bias
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x * mask.unsqueeze(-1).to(x.dtype)


def _block_stack(dims: list[int], in_dim: int, options: Options, *, skip: bool) -> nn.ModuleList:
    blocks = []
    for out_dim in dims:
        blocks.append(
            LinearBlock(
                in_dim,
                out_dim,
                block_type=options.linear_block_type,
                activation=options.linear_activation,
                normalization=options.normalization,
                dropout=options.dropout,
                skip=skip,
                masking=options.masking,
            )
        )
        in_dim = out_dim
    return nn.ModuleList(blocks)


def _run_stack(blocks: nn.ModuleList, x: Tensor, mask: Tensor | None = None) -> Tensor:
    for block in blocks:
        x = block(x, mask)
    return x


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


class InputEmbedding(nn.Module):
    """Normalise one input and embed it into D with linear blocks 16 → 32 → … → D, plus a learned type vector."""

    def __init__(self, stats, options: Options):
        super().__init__()
        log_scale, _, mean, std = stats.as_arrays()
        self.normalizer = InputNormalizer(log_scale.tolist(), mean.tolist(), std.tolist())
        dims = embedding_dims(options.initial_embedding_dim, options.hidden_dim, options.num_embedding_layers)
        self.blocks = _block_stack(
            dims, len(stats.features), options, skip=options.initial_embedding_skip_connections
        )
        self.type_vector = nn.Parameter(torch.zeros(options.hidden_dim))
        nn.init.normal_(self.type_vector, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, J, F) with mask (B, J), or (B, F) for a global → (B, J, D) or (B, D)."""
        hidden = _run_stack(self.blocks, self.normalizer(x, mask), mask)
        hidden = hidden + self.type_vector
        if mask is not None:
            hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return hidden


class ParticleBranch(nn.Module):
    """One particle: branch blocks + encoder with its own token, a jet encoder, the symmetric tensor attention."""

    def __init__(self, options: Options, *, symmetric: bool, n_daughters: int):
        super().__init__()
        dim = options.hidden_dim
        self.dim = dim
        self.symmetric = symmetric
        self.split = options.split_symmetric_attention
        self.token = nn.Parameter(torch.randn(dim) * 0.02)
        self.embedding = _block_stack(
            [dim] * options.num_branch_embedding_layers, dim, options, skip=options.skip_connections
        )
        self.encoder = Encoder(options.num_branch_encoder_layers, options)
        self.jet_embedding = _block_stack(
            [dim] * options.num_jet_embedding_layers, dim, options, skip=options.skip_connections
        )
        self.jet_encoder = Encoder(options.num_jet_encoder_layers, options)
        if n_daughters != 2:
            raise ConfigError(
                None, "EVENT", f"SPANet2 attention supports particles with 2 daughters, not {n_daughters}"
            )
        if self.split:
            self.daughter_projections = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_daughters))
        else:
            self.weight = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))
        self.detector = _block_stack(
            [dim] * options.num_detector_layers, dim, options, skip=options.skip_connections
        )
        self.detector_out = nn.Linear(dim, 1)

    def forward(self, sequence: Tensor, mask: Tensor, n_jets: int) -> tuple[Tensor, Tensor, Tensor]:
        """sequence (B, 1 + L, D) central output (slot 0 = event token, then J jets, then globals), mask (B, 1 + L).

        Returns (log_probs (B, J, J), detection_logit (B,), particle_vector (B, D)).
        """
        hidden = _run_stack(self.embedding, sequence[:, 1:], mask[:, 1:])  # (B, L, D)
        token = self.token.expand(hidden.shape[0], 1, -1)  # (B, 1, D)
        hidden = self.encoder(torch.cat([token, hidden], dim=1), mask)  # (B, 1 + L, D)
        particle_vector = hidden[:, 0]  # (B, D)
        jets = hidden[:, 1 : 1 + n_jets]  # (B, J, D)
        jet_mask = mask[:, 1 : 1 + n_jets]  # (B, J)
        jets = _run_stack(self.jet_embedding, jets, jet_mask)
        if len(self.jet_encoder.layers):
            with_token = torch.cat([particle_vector.unsqueeze(1), jets], dim=1)  # (B, 1 + J, D)
            jets = self.jet_encoder(with_token, mask[:, : 1 + n_jets])[:, 1:]  # (B, J, D)
        logits = self._pair_logits(jets)  # (B, J, J)
        log_probs = _masked_pair_log_softmax(logits, jet_mask)
        detection = self.detector_out(_run_stack(self.detector, particle_vector)).squeeze(-1)  # (B,)
        return log_probs, detection, particle_vector

    def _pair_logits(self, jets: Tensor) -> Tensor:
        """logits[b, i, j] = Σ_d y1[b, i, d] y2[b, j, d] / D, symmetrised (L + Lᵀ)/2 for symmetric daughters."""
        if self.split:
            first = self.daughter_projections[0](jets)  # (B, J, D)
            second = self.daughter_projections[1](jets)  # (B, J, D)
            logits = torch.bmm(first, second.transpose(1, 2)) / self.dim  # (B, J, J)
        else:
            logits = torch.bmm(jets @ self.weight, jets.transpose(1, 2)) / self.dim  # (B, J, J)
        if self.symmetric:
            logits = 0.5 * (logits + logits.transpose(1, 2))
        return logits


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


class SPANet2(nn.Module):
    """The SPANet2 network for one EventTopology (any sequential/global inputs; particles with two daughters).

    Build with `SPANet2(options, topology, normalization)`; everything needed to rebuild it is
    options.json + the event YAML + normalization.json (`model.normalization`).
    """

    def __init__(self, options: Options, topology: EventTopology, normalization: NormalizationStats):
        super().__init__()
        self.options = options
        self.topology = topology
        self.normalization = normalization
        dim = options.hidden_dim
        self.sequential_names = [s.name for s in topology.sequential_inputs]
        self.global_names = [s.name for s in topology.global_inputs]
        if topology.relative_inputs:
            raise ConfigError(
                topology.path, "INPUTS/RELATIVE", "RELATIVE inputs are not supported by SPANet2"
            )
        missing = [n for n in self.sequential_names + self.global_names if n not in normalization.inputs]
        if missing:
            raise ConfigError(None, "inputs", f"normalisation statistics lack inputs {missing}")
        self.embeddings = nn.ModuleDict(
            {
                name: InputEmbedding(normalization.inputs[name], options)
                for name in self.sequential_names + self.global_names
            }
        )
        self.event_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.encoder = Encoder(options.num_encoder_layers, options)
        self.particle_names = list(topology.particle_names)
        branches = {}
        for particle in topology.particles:
            group = topology.daughter_permutation_group(particle.name)
            branches[particle.name] = ParticleBranch(
                options, symmetric=len(group) > 1, n_daughters=len(particle.daughters)
            )
        self.branches = nn.ModuleDict(branches)
        self.classification_names = classification_keys(topology)
        heads = {}
        for name in self.classification_names:
            n_classes = normalization.classification_classes.get(name, 2)
            heads[name.replace("/", ":")] = nn.Sequential(
                _Stack(
                    _block_stack(
                        [dim] * options.num_classification_layers, dim, options, skip=options.skip_connections
                    )
                ),
                nn.Linear(dim, n_classes),
            )
        self.classifiers = nn.ModuleDict(heads)
        if topology.regressions and options.regression_loss_scale > 0:
            log.warning("regression heads are not implemented in SPANet2; REGRESSIONS are ignored")

    def forward(self, batch: Batch) -> ModelOutputs:
        """batch: {"sequential": {name: (B, J, F)}, "sequential_mask": {name: (B, J) bool}, "global": {name: (B, F)}}."""
        parts, masks = [], []
        for name in self.sequential_names:
            mask = batch["sequential_mask"][name]
            parts.append(self.embeddings[name](batch["sequential"][name], mask))  # (B, J_s, D)
            masks.append(mask)
        n_jets = sum(p.shape[1] for p in parts)
        for name in self.global_names:
            values = batch["global"][name]
            if values.dim() == 1:
                values = values.unsqueeze(-1)  # (B,) → (B, 1)
            parts.append(self.embeddings[name](values).unsqueeze(1))  # (B, 1, D)
            masks.append(torch.ones(values.shape[0], 1, dtype=torch.bool, device=values.device))
        batch_size = parts[0].shape[0]
        token = self.event_token.expand(batch_size, 1, -1)  # (B, 1, D)
        sequence = torch.cat([token] + parts, dim=1)  # (B, 1 + J + G, D)
        mask = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool, device=sequence.device)] + masks, dim=1)
        sequence = self.encoder(sequence, mask)  # (B, 1 + J + G, D)
        event_vector = sequence[:, 0]  # (B, D)

        log_probs, detections, particle_vectors = [], [], []
        for name in self.particle_names:
            lp, det, vec = self.branches[name](sequence, mask, n_jets)
            log_probs.append(lp)
            detections.append(det)
            particle_vectors.append(vec)
        classification = {
            name: self.classifiers[name.replace("/", ":")](event_vector) for name in self.classification_names
        }
        return ModelOutputs(
            assignment_log_probs=log_probs,
            detection_logits=torch.stack(detections, dim=1),  # (B, P)
            classification_logits=classification,
            event_vector=event_vector,
            particle_vectors=torch.stack(particle_vectors, dim=1),  # (B, P, D)
        )


class _Stack(nn.Module):
    """A ModuleList of LinearBlocks applied in turn (no mask), usable inside nn.Sequential."""

    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: Tensor) -> Tensor:
        return _run_stack(self.blocks, x)
