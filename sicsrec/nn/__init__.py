"""Plain ``nn.Module``s: no Lightning, no files."""

from sicsrec.nn.attention import MultiHeadAttention, TransformerLayer
from sicsrec.nn.content_encoder import ContentEncoder
from sicsrec.nn.gru_encoder import GRUEncoder
from sicsrec.nn.id_encoder import IDEncoder
from sicsrec.nn.sicsrec_network import SICSRecNetwork

__all__ = ["ContentEncoder", "GRUEncoder", "IDEncoder", "MultiHeadAttention", "SICSRecNetwork", "TransformerLayer"]
