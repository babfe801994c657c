"""The three training objectives, each a function of network outputs and the batch's targets:
stage 1 (ID and content encoders apart), stage 2 (the fused user vector + the content-aware
contrastive term) and alignment SFT (InfoNCE over title and cover pairs).

Plain torch (no Lightning), so the GPU benchmark trains with exactly what the stages train with;
the loss functions themselves are in :mod:`sicsrec.nn.losses`.
"""

from __future__ import annotations

import torch

from sicsrec.nn.losses import Scoring, content_contrastive, full_softmax_ce, info_nce, item_scores


def stage1_objective(
    targets: torch.Tensor,
    id_states: torch.Tensor | None = None,
    id_table: torch.Tensor | None = None,
    content_states: torch.Tensor | None = None,
    content_table: torch.Tensor | None = None,
    scoring: Scoring = "dot",
    id_temperature: float = 1.0,
    content_temperature: float = 0.05,
    contrastive_weight: float = 0.2,
    id_candidates: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """At every target position (``targets > 0``; states are (B, L, H)): the ID encoder's
    cross-entropy over all items (``id_candidates``, (num_items + 1,) bool: over those only), and
    the content encoder's next-item loss (cosine / τ against the content table) +
    ``contrastive_weight`` · content-aware contrastive loss. The two parts share nothing, so
    neither gradient reaches the other encoder; ``loss`` is their sum."""
    mask = targets > 0
    wanted = targets[mask]
    out = {"loss": torch.zeros((), device=targets.device)}
    if id_states is not None:
        scores = item_scores(id_states[mask], id_table, scoring, id_temperature)
        if id_candidates is not None:
            scores = scores.masked_fill(~id_candidates, float("-inf"))
        out["id"] = full_softmax_ce(scores, wanted)
        out["loss"] = out["loss"] + out["id"]
    if content_states is not None:
        states = content_states[mask]
        out["content"] = full_softmax_ce(item_scores(states, content_table, "cosine", content_temperature), wanted)
        out["contrastive"] = content_contrastive(states, content_table[wanted], wanted, content_temperature)
        out["loss"] = out["loss"] + out["content"] + contrastive_weight * out["contrastive"]
    return out


def stage2_objective(
    targets: torch.Tensor,
    scores: torch.Tensor,
    contrast_vectors: torch.Tensor | None,
    content_table: torch.Tensor,
    contrastive_weight: float = 0.2,
    content_temperature: float = 0.05,
) -> dict[str, torch.Tensor]:
    """For the target positions only (``targets`` are item ids, ``scores`` the model's scores of
    all items there): cross-entropy over all items + ``contrastive_weight`` · the content-aware
    contrastive loss between ``contrast_vectors`` (the user vector or its content part; None: no
    contrastive term) and the targets' content vectors."""
    out = {"ce": full_softmax_ce(scores, targets)}
    out["loss"] = out["ce"]
    if contrast_vectors is not None and contrastive_weight > 0:
        out["contrastive"] = content_contrastive(contrast_vectors, content_table[targets], targets, content_temperature)
        out["loss"] = out["loss"] + contrastive_weight * out["contrastive"]
    return out


def alignment_objective(
    tasks: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    weights: dict[str, float],
    temperature: float,
) -> dict[str, torch.Tensor]:
    """Alignment SFT: per task (``t2t``, ``i2i``, ``t2i``) the symmetric InfoNCE of its embedding
    pairs ``(a, b, a_ids, b_ids)`` with in-batch negatives; ``loss`` is their weighted sum. Tasks
    a batch cannot form (no covers, one pair) are simply absent."""
    out = {name: info_nce(a, b, a_ids, b_ids, temperature) for name, (a, b, a_ids, b_ids) in tasks.items()}
    if out:
        out["loss"] = sum(weights[name] * out[name] for name in tasks)
    return out
