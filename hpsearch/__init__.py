"""hpsearch: W&B-style hyperparameter sweeps over timm image classifiers, run by torchrun."""

__version__ = "0.1.0"
