"""The exceptions this project raises on bad input: one clear message, no deep trace."""


class RoFormerError(Exception):
    """Base class of every error this project raises on bad input.

    Example:
        >>> try:
        ...     raise CheckpointError("no checkpoint in /tmp/nowhere")
        ... except RoFormerError as e:
        ...     print(e)
        no checkpoint in /tmp/nowhere
    """


class ConfigError(RoFormerError, ValueError):
    """A config field is missing, of the wrong type, or impossible."""


class CheckpointError(RoFormerError, ValueError):
    """A checkpoint cannot be found, read, or does not fit the model."""


class InputError(RoFormerError, ValueError):
    """A model input has the wrong type, shape or values."""


class DistributedError(RoFormerError, RuntimeError):
    """Another process of a multi-process run stopped, or stopped answering, within the timeout."""
