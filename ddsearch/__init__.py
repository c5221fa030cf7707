"""ddsearch: experiment-tracked hyperparameter search for dataset distillation."""

from ddsearch.allocator import tune_malloc

__version__ = "0.1.0"

tune_malloc()  # before any tensor exists; see ddsearch/allocator.py
