"""The exceptions adcore raises.  Each names the problem it reports."""

__all__ = ["AdcoreError", "BranchChangedError", "TapeError", "TapeFormatError",
           "NestingError", "CoordinateError"]


class AdcoreError(Exception):
    """Base class of adcore's own errors."""


class BranchChangedError(AdcoreError):
    """A replayed tape would take another branch than the one it recorded."""


class TapeError(AdcoreError, ValueError):
    """A handle used with the wrong tape: from another tape, or from a finished one."""


class TapeFormatError(AdcoreError, ValueError):
    """A saved tape is truncated, corrupted, of another version, or inconsistent."""


class NestingError(AdcoreError, TypeError):
    """A nesting of differentiations that adcore does not support."""


class CoordinateError(AdcoreError, KeyError):
    """A coordinate or coordinate set that does not fit: unknown label, mismatched sets."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
