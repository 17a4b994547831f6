"""Controllers: deployments and rollouts, node lifecycle, garbage collection, namespaces."""

from .base import Controller
from .deployment import DeploymentController
from .events import EventRecorder
from .gc import GarbageCollector
from .manager import ALL_CONTROLLERS, ControllerManager, ControllerOptions, run_controllers
from .namespace import NamespaceController
from .nodelifecycle import LifecycleOptions, NodeLifecycleController
from .workqueue import WorkQueue

__all__ = [
    "ALL_CONTROLLERS",
    "Controller",
    "ControllerManager",
    "ControllerOptions",
    "DeploymentController",
    "EventRecorder",
    "GarbageCollector",
    "LifecycleOptions",
    "NamespaceController",
    "NodeLifecycleController",
    "WorkQueue",
    "run_controllers",
]
