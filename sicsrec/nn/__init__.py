"""Plain ``nn.Module``s: no Lightning, no files."""

from sicsrec.nn.attention import MultiHeadAttention, TransformerLayer
from sicsrec.nn.gru_encoder import GRUEncoder
from sicsrec.nn.id_encoder import IDEncoder

__all__ = ["GRUEncoder", "IDEncoder", "MultiHeadAttention", "TransformerLayer"]
