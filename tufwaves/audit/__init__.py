"""The audit of a wave's published history: ``tufwaves waves audit``.

An independent auditor needs only the published files — a repository
directory, a copy of its ``metadata/``, or the base URL of a server or
mirror — to check that every version of a wave's rollout and ripple roles
was signed as delegated and that the whole history followed the wave's
signed policy and plan::

    from tufwaves.audit import DirectorySource, audit_wave

    report = audit_wave(DirectorySource(Path("repo")), "spring-fix")
    for v in report.violations:
        print(v.kind, v.role, v.version, v.message)

``specs/audit.md`` is the normative description: the walk, every check and
its violation code, and what is proven by offline signatures versus what
rests on evidence the online keys signed.
"""

from __future__ import annotations

from tufwaves.audit._history import KINDS, AuditReport, TimelineEntry, Violation, audit_wave
from tufwaves.audit._sources import DirectorySource, HttpSource, Source

__all__ = [
    "KINDS",
    "AuditReport",
    "DirectorySource",
    "HttpSource",
    "Source",
    "TimelineEntry",
    "Violation",
    "audit_wave",
]
