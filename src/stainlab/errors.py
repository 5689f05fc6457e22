"""The exceptions and warnings stainlab raises.

Every error a user can cause derives from :class:`StainlabError`, so a batch job can catch one type,
report the message (which names the file or argument at fault) and go on with the next input.
"""


class StainlabError(Exception):
    """Base class of every error stainlab raises on purpose."""


class InputError(StainlabError, ValueError):
    """An image or file that cannot be used as given (wrong shape, dtype, unreadable, truncated...)."""


class NoTissueError(InputError):
    """An image with no tissue to learn from: all background, or too few stained pixels."""


class DivergedError(StainlabError, FloatingPointError):
    """A training loss that became NaN or infinite (too high a learning rate, or broken data)."""


class NotFittedError(StainlabError, RuntimeError):
    """A transform that needs ``fit(reference)`` was used before it was fitted."""


class NoTissueWarning(UserWarning):
    """An image without tissue was passed through unchanged instead of being normalized."""


class NoBackgroundWarning(UserWarning):
    """An image without background glass: a background-based method estimated it another way."""
