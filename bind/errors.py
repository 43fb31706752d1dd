"""Exceptions with messages that name the input, the modality and what was expected."""

from __future__ import annotations


class BindError(Exception):
    """Base class of bind's own errors."""


class MediaError(BindError):
    """A media source could not be decoded or does not hold what the modality needs.

    Raised by every ``Modality.load``; datasets catch exactly this type to skip and report a sample.
    """

    def __init__(self, source: object, modality: str, reason: str) -> None:
        self.source, self.modality, self.reason = source, modality, reason
        super().__init__(f"{modality}: cannot use {_describe(source)}: {reason}")


class InputError(BindError, ValueError):
    """A tensor handed to an encoder has the wrong shape, dtype or channel count."""


class ModelLoadError(BindError, ValueError):
    """A model directory (``config.json`` + ``model.safetensors``) is missing, unreadable or does not match itself.

    Raised by :meth:`bind.BindModel.from_pretrained` / :func:`bind.load_model` *before* the model is used; the message
    is one line naming the file and what is wrong.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {' '.join(str(reason).split())}")


class BackendError(BindError, RuntimeError):
    """An attention backend cannot run here: xformers not installed, its CUDA kernels not loadable under this torch,
    or tensors that are not on CUDA. The message names the fix."""


class UnknownModalityError(BindError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def _describe(source: object) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if hasattr(source, "shape"):
        return f"<array shape {tuple(source.shape)}>"
    return repr(str(source))
