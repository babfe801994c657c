"""SICSRec's stage-2 model as one network: both stage-1 sequence encoders, the mix-modality
decoder and the fusion of their states into the user vector."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sicsrec.nn.mix_decoder import Fusion, gather_last

Head = Literal["method", "ensemble"]


class SICSRecNetwork(nn.Module):
    """``head="method"``: the ID, content and decoder states are fused into one user vector in the
    ID encoder's space, scored against its item vectors (``id_items``: the ID rows, or with stage 1's
    ``item_content`` each item's ID row + a learned map of its content, so that a never-seen item is
    scored through its content). ``head="ensemble"``: ``[ID part ; content part]`` scored against
    ``[ID items ; content table]``.

    With ``cold_neighbours`` k > 0, an item no training part holds borrows its ID row from the k
    seen items whose content vectors are closest to its own (weights: softmax of the cosines over
    ``neighbour_temperature``): its row is then on the scale of the fitted rows, so a new item
    that looks like what the user is likely to watch next ranks like those items do. (Training
    leaves such items out of its softmax, so their rows are borrowed outside training only.) With
    ``skip_new_items`` such an item in a history being ranked is left out of what the encoders
    read: its own row is one training only pushed down, and read as an input it misleads the user
    state at the position that matters most (a borrowed row misleads it more: 298d0da:docs/results.md §19).

    Args:
        id_encoder, content_encoder: the stage-1 sequence encoders (ID: ``encoder(items)`` and an
            ``item_embedding``; content: ``encoder(items, content_table)``).
        decoder: the mix-modality decoder (``decoder(id_states, content_states)``) or None.
        fusion: the fusion of the last-position states.
        head: see above.
        item_dropout: dropout on the ID item table in training.
        cold_neighbours: how many seen items a never-seen item borrows its ID row from (0: none).
        neighbour_temperature: τ of the softmax over their content cosines.
        skip_new_items: outside training, never-seen items (``seen`` false) are dropped from the input
            histories (a history of nothing else is read as it is).
    """

    def __init__(
        self,
        id_encoder: nn.Module,
        content_encoder: nn.Module,
        decoder: nn.Module | None,
        fusion: Fusion,
        head: Head = "method",
        item_dropout: float = 0.0,
        cold_neighbours: int = 0,
        neighbour_temperature: float = 0.05,
        skip_new_items: bool = False,
    ):
        super().__init__()
        self.id_encoder, self.content_encoder, self.decoder, self.fusion = id_encoder, content_encoder, decoder, fusion
        self.head, self.item_dropout = head, item_dropout
        self.cold_neighbours, self.neighbour_temperature = cold_neighbours, neighbour_temperature
        self.skip_new_items = skip_new_items

    def item_table(
        self, content: torch.Tensor, id_items: torch.Tensor, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What user vectors are scored against, given the content table ``content``, the ID
        encoder's item vectors ``id_items`` and which items occur in training (``seen``,
        (num_items + 1,) bool; None: all): ``id_items`` (dropped out in training), or
        ``[ID items ; content table]`` (``ensemble``)."""
        table = F.dropout(id_items, self.item_dropout, self.training)
        if self.cold_neighbours > 0 and seen is not None and not self.training:
            table = self.borrowed_rows(table, content, seen)  # in training such items are no candidates
        return torch.cat([table, content], dim=-1) if self.head == "ensemble" else table

    def borrowed_rows(self, table: torch.Tensor, content: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """``table`` with each never-seen item's row (padding row 0 aside) replaced by the
        content-similarity-weighted mean of its ``cold_neighbours`` nearest seen items' rows."""
        new = (~seen).nonzero().squeeze(1)
        new, old = new[new > 0], seen.nonzero().squeeze(1)
        if len(new) == 0 or len(old) == 0:
            return table
        unit = F.normalize(content, dim=-1)
        cosines, nearest = (unit[new] @ unit[old].T).topk(min(self.cold_neighbours, len(old)), dim=1)
        weights = torch.softmax(cosines / self.neighbour_temperature, dim=1)
        borrowed = (weights[..., None] * table[old[nearest]]).sum(1)
        return table.index_copy(0, new, borrowed.to(table.dtype))

    def forward(
        self,
        items: torch.Tensor,
        content: torch.Tensor,
        id_items: torch.Tensor | None = None,
        all_positions: bool = False,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User vectors: at every position (B, L, D) or each row's last real one (B, D); ``id_items``:
        the ID encoder's item vectors (None: its ID rows); ``seen``: which items occur in training
        (for ``skip_new_items``; None: all)."""
        if self.skip_new_items and seen is not None and not self.training:  # training inputs hold none
            items = seen_only(items, seen)
        id_h = self.id_encoder(items, table=id_items)
        content_h = self.content_encoder(items, content)
        streams = [id_h, content_h]
        if self.decoder is not None:
            streams.append(self.decoder(id_h, content_h))
        if not all_positions:
            streams = [gather_last(s, items) for s in streams]
        if self.head == "ensemble":
            streams[1] = F.normalize(streams[1], dim=-1)  # content vectors are unit length too
        return self.fusion(*streams)

    def content_part(self, users: torch.Tensor) -> torch.Tensor:
        """What the contrastive loss pulls towards the next item's content vector: the user vector
        itself (``method``), or its content part (``ensemble``)."""
        if self.head != "ensemble":
            return users
        return users[..., users.shape[-1] // 2 :]


def seen_only(items: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Right-padded ``items`` with the never-seen ones dropped and the rest moved left, in order; a
    row with no seen item is kept as it is."""
    keep = seen[items] & (items > 0)
    keep = keep | ~keep.any(1, keepdim=True) & (items > 0)
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    return torch.where(keep.gather(1, order), items.gather(1, order), torch.zeros_like(items))
