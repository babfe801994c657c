"""Files → prepared dataset → batches."""

try:
    from sicsrec.data.datamodule import SequenceDataModule
    from sicsrec.data.formats import CatalogueFormat, HFDatasetFormat, NineRecFormat, RawDataset, SequenceFormat
    from sicsrec.data.prepare import PreparedData, prepare
    from sicsrec.errors import DataError
except ImportError:  # a torch-only machine (benchmarks/gpu.py on the lent GPU) uses sicsrec.data.batching alone
    pass

__all__ = [
    "CatalogueFormat",
    "DataError",
    "HFDatasetFormat",
    "NineRecFormat",
    "PreparedData",
    "RawDataset",
    "SequenceDataModule",
    "SequenceFormat",
    "prepare",
]
