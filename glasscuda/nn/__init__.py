"""Layers and models with explicit forward and backward passes (PyTorch layouts)."""
from .batchnorm import BatchNorm2d, fold_batchnorm
from .layers import Conv2d, Flatten, GlobalAvgPool2d, GlobalMaxPool2d, Linear, MaxPool2d, ReLU, Sequential
from .module import Module, Parameter

__all__ = ["BatchNorm2d", "Conv2d", "Flatten", "GlobalAvgPool2d", "GlobalMaxPool2d", "Linear", "MaxPool2d", "Module", "Parameter",
           "ReLU", "Sequential", "fold_batchnorm"]
