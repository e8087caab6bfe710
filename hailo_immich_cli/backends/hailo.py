"""Hailo backend (HailoRT 4.23 through `hailo_platform`, imported lazily).

Only the probe lives here so far; the backend itself is built in the Hailo-backend issue.
"""

from __future__ import annotations

INSTALL_HINT = (
    "install Hailo's HailoRT Python wheel (hailort-4.23.0-cp3XX-...whl from the Hailo Developer Zone) "
    "into this environment, with the matching hailort .deb and hailo_pci driver on the host"
)


def probe() -> tuple[bool, str]:
    """(True, description) when hailo_platform imports and a device answers; (False, why) otherwise."""
    try:
        import hailo_platform  # noqa: F401
    except ImportError as exc:
        return False, f"hailo_platform is not importable ({exc}); {INSTALL_HINT}"
    try:
        ids = hailo_platform.Device.scan()
    except Exception as exc:  # HailoRT raises its own exception types
        return False, f"HailoRT could not scan for devices: {exc}"
    if not ids:
        return False, "hailo_platform is installed but no Hailo device was found (is the hailo_pci driver loaded?)"
    return True, f"device {ids[0]}"
