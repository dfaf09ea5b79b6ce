"""Exceptions raised by NuoNuo.

Every exception subclasses a built-in one, so callers that already catch
``ValueError``, ``TypeError``, ``KeyError`` or ``OSError`` keep working.
"""

from __future__ import annotations


class NuoNuoError(Exception):
    """Base class of every exception that NuoNuo raises on purpose."""


class ConfigError(NuoNuoError, ValueError):
    """A configuration field has an invalid value."""


class InvalidInputError(NuoNuoError, ValueError):
    """A text, query, id, namespace or argument has an invalid value."""


class InvalidTypeError(NuoNuoError, TypeError):
    """An argument has the wrong type."""


class NamespaceError(InvalidInputError):
    """A namespace is not a string or a tuple of non-empty strings."""


class NamespaceTypeError(NamespaceError, InvalidTypeError):
    """A namespace, or one of its labels, is not a string.

    Both a :class:`NamespaceError` (a ``ValueError``) and an
    :class:`InvalidTypeError` (a ``TypeError``), so either ``except`` catches it.
    """


class MemoryNotFoundError(NuoNuoError, KeyError):
    """No memory with the requested id exists."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a plain message reads better.
        return str(self.args[0]) if self.args else ""


class EmbeddingError(NuoNuoError, ValueError):
    """An embedder returned vectors that cannot be stored (NaN, infinite, wrong shape)."""


class StorageError(NuoNuoError, OSError):
    """A memory file cannot be opened or written."""


class FormatVersionError(StorageError):
    """A memory file was written by a newer, unknown format version."""
