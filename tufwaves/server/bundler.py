"""Build one device's bundle from the repository and the inventory.

The bundle (``specs/bundle.md``) carries the exact bytes of every metadata file
on the device's path and its Merkle evidence. Building one costs the number
of waves of its tag and its own ripples, never the size of the fleet: list
ripples are read as files, Merkle evidence comes from the ripple's tree file
(binary search plus one 256-leaf subtree).

Waves that can no longer matter to the device are left out
(``specs/bundle.md`` §2.1): expired, not newer than the version the device
runs, or superseded by a newer complete wave of its tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tufwaves.device.bundle import Bundle, BundleFile
from tufwaves.device.membership import MerkleEvidence, canonical_uuid
from tufwaves.errors import InputError
from tufwaves.server.inventory import Inventory
from tufwaves.server.merkle_file import MerkleTreeFile
from tufwaves.server.metadata import ripple_role, rollout_role, wave_role
from tufwaves.server.repository import PublishedState, Repository
from tufwaves.server.rollout import WaveContext, load_wave, tree_path

__all__ = ["build_bundle"]


def build_bundle(
    repo: Repository,
    inv: Inventory,
    uuid: str,
    *,
    since_root: int = 1,
    waves: Sequence[str] | None = None,
    state: PublishedState | None = None,
) -> Bundle:
    """Everything device ``uuid`` needs to decide, for a device that trusts
    root version ``since_root``.

    Give the bundle (``bundle.to_bytes()``) to the device, which decides with
    :meth:`tufwaves.verify.Verifier.decide`.

    Args:
        repo: The repository.
        inv: Its inventory.
        uuid: The device.
        since_root: The root version the device trusts; newer roots are included.
        waves: Only these waves, as they are; by default every published
            wave whose tag and hardware ids match the device (from the
            inventory) and that can still matter to it (not expired at the
            repository clock's time, newer than the device's installed
            version, not below a newer complete wave), with the ripples that
            selected it and every fraction ripple.
        state: The published state to read (default: the current one); every
            file comes from that one state.

    Returns:
        The bundle.

    Raises:
        InputError: A bad UUID, a device not in the inventory (without
            ``waves``), an unknown wave, or ``since_root`` out of range.
    """
    uuid = canonical_uuid(uuid)
    device = inv.get(uuid)
    if device is None and waves is None:
        raise InputError(
            f"device {uuid} is not in the inventory; import it ('tufwaves fleet import') "
            "or name the waves with --wave"
        )
    state = state or repo.state()
    if not 1 <= since_root <= state.root_version:
        raise InputError(
            f"--since-root {since_root} is not a published root version (1..{state.root_version})"
        )
    files = [
        BundleFile("root", v, repo.role_bytes("root", v))
        for v in range(since_root + 1, state.root_version + 1)
    ]
    files.append(BundleFile("timestamp", state.timestamp.signed.version, state.timestamp_bytes))
    snapshot = state.snapshot.signed.version
    files.append(BundleFile("snapshot", snapshot, repo.role_bytes("snapshot", snapshot)))
    files.append(_file(repo, state, "targets"))
    names = sorted(r.removeprefix("wave.") for r in state.roles() if r.startswith("wave."))
    if waves is not None:
        unknown = sorted(set(waves) - set(names))
        if unknown:
            raise InputError(f"no published wave {', '.join(unknown)}")
        names = sorted(set(waves))
    selections = dict(inv.device_selections(uuid)) if device else {}
    evidence: list[MerkleEvidence] = []
    contexts = [load_wave(repo, name, state) for name in names]
    if waves is None and device is not None:
        contexts = [
            w for w in contexts if w.info.tag == device.tag and device.hardware_id in w.hardware_ids
        ]
        contexts = _still_relevant(contexts, device.installed_version, repo.now())
    for wave in contexts:
        name = wave.name
        if wave.rollout is None:
            continue  # no rollout role signed yet: the wave lets no device in
        files.append(_file(repo, state, wave_role(name)))
        files.append(_file(repo, state, rollout_role(name)))
        records = {r.index: r for r in inv.ripples(name)}
        for index in range(1, wave.ripple_count + 1):
            record = records.get(index)
            encoding = record.encoding if record else None
            if encoding == "fraction" or selections.get(name) == index:
                files.append(_file(repo, state, ripple_role(name, index)))
            if encoding == "merkle-sha256" and selections.get(name) == index:
                with MerkleTreeFile(tree_path(repo, name, index)) as tree:
                    proof = tree.evidence(uuid, ripple_role(name, index))
                if proof is not None:
                    evidence.append(proof)
    return Bundle(uuid, tuple(files), tuple(evidence))


def _expired(wave: WaveContext, now: datetime) -> bool:
    rollout = wave.rollout
    return wave.expires <= now or (rollout is not None and rollout.signed.is_expired(now))


def _still_relevant(
    waves: Sequence[WaveContext], installed: int | None, now: datetime
) -> list[WaveContext]:
    """The waves of one device (its tag and hardware id) that can still matter to it.

    Left out: a wave whose ``wave.W`` or ``rollout.W`` is expired at ``now``
    (the verifier would leave it out); one whose version is not above the
    installed version the inventory knows; one below a newer wave that is
    complete, not expired and completable by the rollout keys (every device
    of the tag may install that one, and a device picks the newest). A
    cancelled wave stays until it expires: the device must see the cancel.
    """
    live = [w for w in waves if not _expired(w, now)]
    if installed is not None:
        live = [w for w in live if w.info.version > installed]
    complete = [
        w.info.version
        for w in live
        if w.status == "complete" and w.policy.online_complete and w.rollout is not None
    ]
    floor = max(complete, default=0)
    return [w for w in live if w.info.version >= floor]


def _file(repo: Repository, state: PublishedState, role: str) -> BundleFile:
    version = state.version_of(role)
    if version is None:
        raise InputError(f"role {role} is not published")
    return BundleFile(role, version, repo.role_bytes(role, version))
