"""Errors raised by the control plane. Each names the offending field, value or id."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ControlPlaneError",
    "DuplicateRequestError",
    "UnknownInstanceError",
    "UnknownRequestError",
    "ValidationError",
]


class ControlPlaneError(Exception):
    """Base class of every error the control plane raises on purpose."""


class ValidationError(ControlPlaneError, ValueError):
    """A field of a core type holds a bad value. ``field`` and ``value`` say which."""

    def __init__(self, owner: str, field: str, value: object, why: str) -> None:
        self.owner = owner
        self.field = field
        self.value = value
        super().__init__(f"{owner}.{field}={value!r}: {why}")


class ConfigError(ControlPlaneError, ValueError):
    """A configuration (YAML / dict) is invalid: unknown key, unknown plugin name, bad value."""


class UnknownRequestError(ControlPlaneError, KeyError):
    """An event names a request id the control plane does not hold in that state."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "unknown request"


class DuplicateRequestError(ControlPlaneError, ValueError):
    """A request id was submitted while a request with the same id is still tracked."""


class UnknownInstanceError(ControlPlaneError, KeyError):
    """An event names an instance id the cluster does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown instance"
