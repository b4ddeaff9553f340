"""Layers and models with explicit forward and backward passes (PyTorch layouts)."""
from .layers import Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU, Sequential
from .module import Module, Parameter

__all__ = ["Conv2d", "Flatten", "GlobalAvgPool2d", "Linear", "MaxPool2d", "Module", "Parameter",
           "ReLU", "Sequential"]
