"""Plain ``nn.Module``s: no Lightning, no files."""

from sicsrec.nn.attention import MultiHeadAttention, TransformerLayer
from sicsrec.nn.id_encoder import IDEncoder

__all__ = ["IDEncoder", "MultiHeadAttention", "TransformerLayer"]
