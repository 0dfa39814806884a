"""The device-side verifier, the one import firmware tooling needs.

``import tufwaves.verify`` loads only the device side of the package
(:mod:`tufwaves.device`): no server, command line or database module. See
:mod:`tufwaves.device.verifier` and ``specs/verifier.md``.

Usage::

    from tufwaves.verify import DeviceIdentity, Verifier

    verifier = Verifier.from_state_dir(Path("/var/lib/ota/trust"))
    decision = verifier.decide(bundle_bytes, DeviceIdentity(uuid, hw, tag, 41))
"""

from __future__ import annotations

from tufwaves.device.verifier import Artifact, Decision, DeviceIdentity, Reason, Verifier

__all__ = ["Artifact", "Decision", "DeviceIdentity", "Reason", "Verifier"]
