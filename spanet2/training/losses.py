"""SPANet2 training loss: symmetric assignment NLL (min over particle permutations), detection, classification."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spanet2.events.topology import EventTopology
from spanet2.training.model import ModelOutputs, classification_keys
from spanet2.training.options import Options

__all__ = ["LossParts", "SPANet2Loss", "compute_loss"]

log = logging.getLogger(__name__)


@dataclass
class LossParts:
    """total = Σ scale × term; every term is a scalar tensor (0 when its task is off)."""

    total: Tensor
    assignment: Tensor
    detection: Tensor
    classification: Tensor
    per_head: dict[str, Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        out = {
            "loss": float(self.total.detach()),
            "assignment_loss": float(self.assignment.detach()),
            "detection_loss": float(self.detection.detach()),
            "classification_loss": float(self.classification.detach()),
        }
        out.update({f"classification_loss/{k}": float(v.detach()) for k, v in self.per_head.items()})
        return out


class SPANet2Loss(nn.Module):
    """The loss for one topology; call `loss(outputs, batch) -> LossParts`.

    Assignment: per particle −log P(true unordered jet pair) (the cell log-probability + log of the
    daughter-group size); per event the particle relabelling (h1 ↔ h2 …) with the smallest summed loss
    is taken (`combine_pair_loss` min | softmin | mean); one term per particle, its (balance-weighted)
    mean over the events where that particle is reconstructable. Detection: one BCE term per particle
    ("reconstructable", targets permuted like the chosen assignment). Classification: one cross-entropy
    term per head, labels −1 ignored. The total is the MEAN of the active terms, each times its scale
    (upstream SPANet's convention, which the note's tuned learning rate and gradient clip assume; for
    HH: (a_h1 + a_h2 + c) / 3). A scale of 0 switches a task off; its head still gets a zero gradient
    (keeps DDP happy without find_unused_parameters).
    """

    def __init__(self, options: Options, topology: EventTopology):
        super().__init__()
        self.options = options
        self.topology = topology
        group = topology.event_permutation_group()  # list of (P,) index tuples
        self.register_buffer(
            "permutations", torch.tensor(group, dtype=torch.long), persistent=False
        )  # (G, P)
        log_group = [math.log(len(topology.daughter_permutation_group(p))) for p in topology.particle_names]
        self.register_buffer("log_daughter_group", torch.tensor(log_group), persistent=False)  # (P,)
        self.classification_names = classification_keys(topology)
        if options.kl_loss_scale > 0 or options.regression_loss_scale > 0:
            log.warning("kl_loss_scale and regression_loss_scale are not implemented in SPANet2; ignored")

    def forward(self, outputs: ModelOutputs, batch: dict) -> LossParts:
        opts = self.options
        zero = outputs.event_vector.new_zeros(())
        log_probs = torch.stack(outputs.assignment_log_probs, dim=1)  # (B, P, J, J)
        targets = batch["targets"]  # (B, P, 2)
        target_mask = batch["target_mask"]  # (B, P)
        event_weight = batch.get("assignment_weight")  # (B,) balance weights of the training split, or None
        if event_weight is None:
            event_weight = torch.ones(target_mask.shape[0], device=target_mask.device)

        terms: list[Tensor] = []  # the active loss terms, each times its scale; the total is their mean
        if opts.assignment_loss_scale > 0 or opts.detection_loss_scale > 0:
            per_particle, chosen_mask = self._assignment(log_probs, targets, target_mask, event_weight)
        else:
            per_particle, chosen_mask = None, target_mask
        dead = 0.0 * outputs.detection_logits.sum()  # zero gradients for switched-off heads (DDP)
        if opts.assignment_loss_scale > 0:
            assignment = per_particle.mean()
            terms.extend((opts.assignment_loss_scale * per_particle).unbind(0))
        else:
            assignment = zero
            dead = dead + 0.0 * torch.nan_to_num(log_probs, neginf=0.0).sum()

        if opts.detection_loss_scale > 0:
            bce = F.binary_cross_entropy_with_logits(
                outputs.detection_logits.float(), chosen_mask.to(torch.float32), reduction="none"
            ).mean(dim=0)  # (P,)
            detection = bce.mean()
            terms.extend((opts.detection_loss_scale * bce).unbind(0))
        else:
            detection = zero

        per_head: dict[str, Tensor] = {}
        for name in self.classification_names:
            logits = outputs.classification_logits[name]
            if opts.classification_loss_scale > 0:
                weight = batch.get("classification_weight", {}).get(name)
                per_head[name] = _cross_entropy(logits, batch["classifications"][name], weight)
                terms.append(opts.classification_loss_scale * per_head[name])
            else:
                dead = dead + 0.0 * logits.sum()
        classification = torch.stack(list(per_head.values())).mean() if per_head else zero

        total = (torch.stack(terms).mean() if terms else zero) + dead
        return LossParts(
            total,
            assignment.detach() if isinstance(assignment, Tensor) else assignment,
            detection.detach(),
            classification.detach(),
            {k: v.detach() for k, v in per_head.items()},
        )

    def _assignment(
        self, log_probs: Tensor, targets: Tensor, target_mask: Tensor, event_weight: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(P,) per-particle mean NLL over the events where it is reconstructable, and the (B, P) target
        mask under the chosen relabelling."""
        batch, n_particles, n_jets, _ = log_probs.shape
        flat = log_probs.float().view(batch, 1, n_particles, n_jets * n_jets)  # (B, 1, P, J²)
        perm_targets = targets[:, self.permutations]  # (B, G, P, 2)
        perm_mask = target_mask[:, self.permutations]  # (B, G, P)
        cell = (perm_targets[..., 0] * n_jets + perm_targets[..., 1]).clamp_min(0)  # (B, G, P)
        n_perm = self.permutations.shape[0]
        cell_log_prob = (
            flat.expand(batch, n_perm, n_particles, n_jets * n_jets).gather(3, cell.unsqueeze(-1)).squeeze(-1)
        )  # (B, G, P)
        nll = -(cell_log_prob + self.log_daughter_group)  # −log P(unordered pair)
        if self.options.focal_gamma > 0:
            nll = nll * (1.0 - torch.exp(-nll)).clamp_min(0.0).pow(self.options.focal_gamma)
        nll = torch.where(perm_mask, nll, torch.zeros_like(nll))
        per_perm = nll.sum(dim=2)  # (B, G)
        mode = self.options.combine_pair_loss
        best = per_perm.argmin(dim=1)  # (B,)
        chosen_mask = perm_mask.gather(1, best.view(batch, 1, 1).expand(batch, 1, n_particles)).squeeze(1)
        if mode == "min":
            per_particle_nll = nll.gather(1, best.view(batch, 1, 1).expand(batch, 1, n_particles)).squeeze(1)
        elif mode == "softmin":
            per_particle_nll = (torch.softmax(-per_perm, dim=1).unsqueeze(-1) * nll).sum(dim=1)
        else:
            per_particle_nll = nll.mean(dim=1)  # (B, P)
        # weighted mean over the events where the particle is reconstructable (upstream divides the weighted
        # sum by the unweighted count; a weighted mean keeps the loss scale independent of the weights' norm)
        weight = event_weight.unsqueeze(1) * chosen_mask.to(per_particle_nll.dtype)  # (B, P)
        loss = (weight * per_particle_nll).sum(dim=0) / weight.sum(dim=0).clamp_min(1e-12)  # (P,)
        return loss, chosen_mask


def _cross_entropy(logits: Tensor, labels: Tensor, weight: Tensor | None) -> Tensor:
    """Weighted mean cross-entropy over labelled events (label −1 ignored); 0 when none is labelled."""
    logits = logits.float()
    valid = labels >= 0
    ce = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")  # (B,)
    w = valid.to(ce.dtype) if weight is None else weight.to(ce.dtype) * valid.to(ce.dtype)
    return (w * ce).sum() / w.sum().clamp_min(1e-12)


def compute_loss(
    outputs: ModelOutputs, batch: dict, options: Options, topology: EventTopology
) -> tuple[Tensor, dict[str, float]]:
    """(total loss, its parts as floats) — the function the trainer calls every step.

    Balance weights travel in the batch: "assignment_weight" (B,) and "classification_weight"
    {name: (B,)} (the dataset adds them to training batches when balance_* options are on).
    """
    # built per call (cheap); a loop should hold its own SPANet2Loss, as the trainer does. No cache keyed on
    # id(options): ids are reused after an object dies, which would hand one run another run's settings.
    loss_fn = SPANet2Loss(options, topology).to(outputs.event_vector.device)
    parts = loss_fn(outputs, batch)
    return parts.total, parts.as_floats()
