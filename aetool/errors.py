"""Exceptions raised by the aetool library.

Every error carries one sentence a user can act on; the CLI prints it as
``Error: ...`` with exit status 1 and no traceback.
"""

from __future__ import annotations


class AetoolError(Exception):
    """Base class for every error aetool raises on purpose."""


class ImageError(AetoolError):
    """An image (or folder of images) cannot be read or used."""


class NoImagesError(ImageError):
    """A folder or path list yielded no usable image."""


class ModelFileError(AetoolError):
    """A model file is missing, is not an aetool model, or does not match its architecture."""


class ConfigError(AetoolError):
    """A configuration value is invalid (bad noise spec, unknown architecture, ...)."""


class TrainingError(AetoolError):
    """Training could not continue (for example the loss became NaN)."""


class OutputError(AetoolError):
    """An output path is unsafe or would overwrite something."""
