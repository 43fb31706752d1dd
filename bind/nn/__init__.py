"""Neural-network building blocks shared by every modality encoder."""

from bind.nn.attention import Attention, attention, available_backends
from bind.nn.heads import EmbeddingHead
from bind.nn.transformer import Block, DividedSpaceTimeBlock, PatchDropout, Transformer

__all__ = [
    "Attention",
    "attention",
    "available_backends",
    "Block",
    "DividedSpaceTimeBlock",
    "EmbeddingHead",
    "PatchDropout",
    "Transformer",
]
