"""Files → prepared dataset → batches."""

from sicsrec.data.datamodule import SequenceDataModule
from sicsrec.errors import DataError
from sicsrec.data.formats import CatalogueFormat, NineRecFormat, RawDataset, SequenceFormat
from sicsrec.data.prepare import PreparedData, prepare

__all__ = ["CatalogueFormat", "DataError", "NineRecFormat", "PreparedData", "RawDataset", "SequenceDataModule",
           "SequenceFormat", "prepare"]
