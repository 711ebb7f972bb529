"""Data stage: sources (files, Hub, BEIR, in memory) -> formats -> training rows and a retrieval eval set
(`loading`), their quality report (`quality`), hard negatives (`mining`), teacher scores (`scoring`); the commands'
entry points are in `preparation`."""

from st_bge.data.loading import (
    ANY_SPLIT,
    InMemoryData,
    TrainingData,
    load_retrieval_set,
    load_training_data,
    source_names,
)
from st_bge.data.retrieval_set import RetrievalSet, load_beir

__all__ = [
    "ANY_SPLIT",
    "InMemoryData",
    "RetrievalSet",
    "TrainingData",
    "load_beir",
    "load_retrieval_set",
    "load_training_data",
    "source_names",
]
