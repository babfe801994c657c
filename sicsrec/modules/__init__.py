"""One LightningModule per stage."""

from sicsrec.modules.stage1 import Stage1Module

__all__ = ["Stage1Module"]
