"""tufwaves: on-demand OTA releases to large fleets, rollout signed with TUF."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
