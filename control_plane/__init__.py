"""sageLLM control plane core: sans-I/O scheduling, routing and planning decisions.

Imports only the standard library and numpy. Drivers (``sim``, ``live``) call
:class:`ControlPlane` with their own clock and execute the actions it returns.
"""

from control_plane.actions import (
    Dispatch,
    Outcome,
    PolicySwitch,
    Queued,
    Reject,
    RejectCause,
    Retry,
)
from control_plane.config import ControlPlaneConfig
from control_plane.errors import (
    ConfigError,
    ControlPlaneError,
    DuplicateRequestError,
    UnknownInstanceError,
    UnknownRequestError,
    ValidationError,
)
from control_plane.manager import Action, ControlPlane, ControlPlaneCounters
from control_plane.types import (
    SLO,
    ClusterView,
    EngineStats,
    Health,
    InstanceSpec,
    InstanceView,
    Priority,
    Request,
)

__all__ = [
    "SLO",
    "Action",
    "ClusterView",
    "ConfigError",
    "ControlPlane",
    "ControlPlaneConfig",
    "ControlPlaneCounters",
    "ControlPlaneError",
    "Dispatch",
    "DuplicateRequestError",
    "EngineStats",
    "Health",
    "InstanceSpec",
    "InstanceView",
    "Outcome",
    "PolicySwitch",
    "Priority",
    "Queued",
    "Reject",
    "RejectCause",
    "Request",
    "Retry",
    "UnknownInstanceError",
    "UnknownRequestError",
    "ValidationError",
]
