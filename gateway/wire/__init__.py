"""The gateway side of the device wire protocol (schemas/wire/*.cddl, version 1).

Typical use in a CoAP resource::

    try:
        report = Report.from_cbor(request.payload)
    except WireError as exc:
        return 4.00 Bad Request with str(exc)  # e.g. "report.workloads[2].state: expected uint, got tstr"
"""

from .cbor import MAX_DEPTH, MAX_PAYLOAD, decode_value, encode_value
from .errors import WireError
from .keys import (
    VERSION_KEY,
    WIRE_VERSION,
    LogClock,
    LogStream,
    NetworkMode,
    RestartPolicy,
    Runtime,
    WorkloadState,
)
from .messages import (
    MESSAGES,
    BlobRef,
    ConfigValue,
    Container,
    ContainerStatus,
    DesiredDoc,
    DockerWorkload,
    Hello,
    HttpGet,
    LogBatch,
    LogLine,
    MicroPythonWorkload,
    MirrorOffer,
    Mount,
    Port,
    Probe,
    Registered,
    Report,
    Resources,
    Volume,
    Workload,
    WorkloadStatus,
    workload_from_obj,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_PAYLOAD",
    "MESSAGES",
    "VERSION_KEY",
    "WIRE_VERSION",
    "BlobRef",
    "ConfigValue",
    "Container",
    "ContainerStatus",
    "DesiredDoc",
    "DockerWorkload",
    "Hello",
    "HttpGet",
    "LogBatch",
    "LogClock",
    "LogLine",
    "LogStream",
    "MicroPythonWorkload",
    "MirrorOffer",
    "Mount",
    "NetworkMode",
    "Port",
    "Probe",
    "Registered",
    "Report",
    "Resources",
    "RestartPolicy",
    "Runtime",
    "Volume",
    "WireError",
    "Workload",
    "WorkloadState",
    "WorkloadStatus",
    "decode_value",
    "encode_value",
    "workload_from_obj",
]
