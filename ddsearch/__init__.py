"""ddsearch: experiment-tracked hyperparameter search for dataset distillation."""

__version__ = "0.1.0"
