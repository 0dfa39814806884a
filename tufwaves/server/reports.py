"""Accepting device-signed install reports (``specs/reports.md``).

:func:`accept_report` is everything the update server does with a report
besides HTTP: parse, find the device and its key, verify the signature,
check that the wave was offered to the device, and store it in one
inventory transaction. Each refusal is a :class:`ReportRefused` naming a
problem slug, so the web layer only maps it to a status code.
"""

from __future__ import annotations

from dataclasses import dataclass

from tufwaves.device.membership import fraction_member
from tufwaves.device.report import DeviceReport, parse_report, verify_report
from tufwaves.errors import InputError, RefusedError, VerificationError
from tufwaves.server.inventory import Inventory
from tufwaves.server.metadata import wave_role
from tufwaves.server.repository import PublishedState, Repository
from tufwaves.server.rollout import WaveContext, load_wave

__all__ = ["AcceptedReport", "ReportRefused", "accept_report", "offered_ripple"]


class ReportRefused(Exception):
    """A report that is not stored: ``slug`` says why (``specs/reports.md`` §5)."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


@dataclass(frozen=True)
class AcceptedReport:
    """A stored report; ``new`` is False for a resent, already stored one."""

    report: DeviceReport
    ripple: int
    new: bool


def offered_ripple(
    wave: WaveContext, inv: Inventory, uuid: str, tag: str, hardware_id: str
) -> int | None:
    """The published ripple of ``wave`` that offered it to the device, or None.

    A list or Merkle ripple that selected the device (the inventory records
    it), else the first fraction ripple whose fraction holds it (the device's
    tag and hardware id matching the wave), as the device's verifier decides.
    """
    selected = inv.selected_ripple(wave.name, uuid)
    if selected is not None:
        return selected if selected <= wave.ripple_count else None
    if tag != wave.info.tag or hardware_id not in wave.hardware_ids:
        return None
    salt = wave.fraction_salt
    for record in inv.ripples(wave.name):
        if record.encoding != "fraction" or record.index > wave.ripple_count:
            continue
        ppm = int(record.selector_data.get("fraction_ppm", 0))
        if fraction_member(salt, uuid, ppm):
            return record.index
    return None


def accept_report(
    repo: Repository,
    inv: Inventory,
    state: PublishedState,
    path_uuid: str,
    body: bytes,
    *,
    waves: dict[str, WaveContext] | None = None,
) -> AcceptedReport:
    """Check and store one report envelope sent for device ``path_uuid``.

    ``waves`` is an optional cache of loaded waves of ``state`` (by name).

    Raises:
        ReportRefused: Nothing was stored; its slug says why.
    """
    try:
        report = parse_report(body)
    except InputError as e:
        raise ReportRefused("bad-report", str(e)) from None
    if report.device != path_uuid:
        raise ReportRefused("bad-report", "signed.device is not the device of the URL")
    device = inv.get(path_uuid)
    if device is None:
        raise ReportRefused("unknown-device", f"device {path_uuid} is not in the inventory")
    public_key = inv.public_key(path_uuid)
    if public_key is None:
        raise ReportRefused(
            "no-device-key",
            f"device {path_uuid} has no registered public key (tufwaves fleet set-key)",
        )
    try:
        verify_report(report, public_key)
    except VerificationError as e:
        raise ReportRefused("bad-signature", str(e)) from None
    wave = _wave(repo, state, report.wave, waves)
    ripple = None
    if wave is not None and wave.info.version == report.version:
        ripple = offered_ripple(wave, inv, path_uuid, device.tag, device.hardware_id)
    if ripple is None:
        raise ReportRefused(
            "not-offered",
            f"wave {report.wave} version {report.version} was never offered to this device",
        )
    try:
        new = inv.store_report(report, ripple, body)
    except RefusedError as e:
        raise ReportRefused("replayed", str(e)) from None
    return AcceptedReport(report, ripple, new)


def _wave(
    repo: Repository, state: PublishedState, name: str, cache: dict[str, WaveContext] | None
) -> WaveContext | None:
    if state.version_of(wave_role(name)) is None:
        return None
    if cache is not None and name in cache:
        return cache[name]
    wave = load_wave(repo, name, state)
    if cache is not None:
        cache[name] = wave
    return wave
