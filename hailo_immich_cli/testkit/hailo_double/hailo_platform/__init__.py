"""Test double of Hailo's `hailo_platform` (HailoRT 4.23 Python API) for machines without a Hailo.

It keeps the real module's names and signatures for what hailo-immich uses and refuses what the
real one refuses. HEF metadata (layer names, shapes, formats, quantisation) is read from the real
file by hailo_immich_cli.models.hef; outputs come from a registered "twin" (see _emulator.py) and go
through the HEF's quantisation, so dequantisation bugs show. Results are EMULATED.
"""

from hailo_platform.pyhailort.pyhailort import (  # noqa: F401
    AsyncInferJob,
    Device,
    FormatOrder,
    FormatType,
    HailoCommunicationClosedException,
    HailoRTException,
    HailoRTHEFNotCompatibleWithDevice,
    HailoRTInvalidArgumentException,
    HailoRTInvalidHEFException,
    HailoRTInvalidOperationException,
    HailoRTNetworkGroupNotActivatedException,
    HailoRTNotFoundException,
    HailoRTStreamAborted,
    HailoRTStreamAbortedByUser,
    HailoRTTimeout,
    HailoSchedulingAlgorithm,
    HailoStreamInterface,
    HEF,
    VDevice,
)

# Like the real package, InferModel / ConfiguredInferModel / AsyncInferCompletionInfo are not exported
# here: they come from VDevice.create_infer_model() or hailo_platform.pyhailort.pyhailort.
__version__ = "4.23.0"
__emulated__ = True  # not in the real module: lets provenance say "emulated"

__all__ = [
    "HEF", "VDevice", "Device", "FormatType", "FormatOrder", "HailoSchedulingAlgorithm", "HailoStreamInterface",
    "HailoRTException", "HailoRTTimeout", "HailoRTStreamAborted", "HailoRTStreamAbortedByUser",
    "HailoRTInvalidOperationException", "HailoRTInvalidArgumentException", "HailoRTNotFoundException",
    "HailoRTInvalidHEFException", "HailoRTHEFNotCompatibleWithDevice", "HailoRTNetworkGroupNotActivatedException",
    "HailoCommunicationClosedException", "AsyncInferJob",
]
