"""Experiment tracking for unsupervised deep learning on FashionMNIST."""

__version__ = "0.1.0"
