"""One LightningModule per stage."""

from sicsrec.modules.align import AlignModule
from sicsrec.modules.stage1 import Stage1Module
from sicsrec.modules.stage2 import Stage2Module

__all__ = ["AlignModule", "Stage1Module", "Stage2Module"]
