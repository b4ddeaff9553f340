"""What the ONNX and PyTorch exports share: reading a checkpoint into a network, one-line errors."""
from __future__ import annotations

import importlib

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ..models import ARCHITECTURES, build_model

INPUT, OUTPUT = "pixels", "probabilities"   # the exported graph's input and output names


class ExportError(ValueError):
    """A checkpoint, model file or input that cannot be exported or run; the message is one line."""


def require(module: str, extra: str = "export"):
    """Import an optional dependency, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f"pip install 'glasscuda[{extra}]'" if extra else f"pip install {module}"
        raise ExportError(f"{module} is not installed ({hint})") from None


def read_checkpoint(source) -> tuple[Checkpoint, str]:
    """``source`` (a path or a loaded :class:`Checkpoint`) and a name for messages."""
    if isinstance(source, Checkpoint):
        return source, "checkpoint"
    try:
        return load_checkpoint(source), str(source)
    except CheckpointError as error:
        raise ExportError(str(error)) from error


def load_network(source):
    """The float32 CPU network of a checkpoint, in eval mode, and its header.

    Anything that stops the checkpoint from rebuilding the network it
    describes (an unknown architecture, a missing or misshapen weight, no
    normalisation) is an :class:`ExportError` naming the file.
    """
    checkpoint, name = read_checkpoint(source)
    header = checkpoint.header
    config = header.get("model")
    if not isinstance(config, dict) or config.get("architecture") not in ARCHITECTURES:
        found = config.get("architecture") if isinstance(config, dict) else config
        raise ExportError(f"{name}: unknown architecture {found!r}; glasscuda exports "
                          f"{', '.join(ARCHITECTURES)}")
    normalization = header.get("normalization")
    if not (isinstance(normalization, dict) and {"mean", "std"} <= set(normalization)):
        raise ExportError(f"{name}: the header has no input normalisation (mean and std), "
                          "which the exported model must apply")
    try:
        model = build_model(config)
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError, TypeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # no quotes
        raise ExportError(f"{name}: {message}") from error
    return model.to("cpu", "float32").eval(), header


def task_of(header: dict) -> str:
    return header.get("task", header["model"]["architecture"])
