"""Build one device's bundle from the repository and the inventory.

The bundle (``specs/bundle.md``) carries the exact bytes of every metadata file
on the device's path and its Merkle evidence. Building one costs the number
of waves of its tag and its own ripples, never the size of the fleet: list
ripples are read as files, Merkle evidence comes from the ripple's tree file
(binary search plus one 256-leaf subtree). A server keeps one
:class:`BundleSource` per published state: waves are parsed, fraction
salts derived and tree files opened once, not per request.

Waves that can no longer matter to the device are left out
(``specs/bundle.md`` §2.1): expired, not newer than the version the device
runs, or superseded by a newer complete wave of its tag.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tufwaves.device.bundle import Bundle, BundleFile
from tufwaves.device.membership import canonical_uuid
from tufwaves.device.profile import RIPPLE_FIELD
from tufwaves.errors import InputError, StorageError
from tufwaves.server.inventory import Device, Inventory
from tufwaves.server.merkle_file import MerkleTreeFile
from tufwaves.server.metadata import ripple_role, rollout_role, wave_role
from tufwaves.server.repository import PublishedState, Repository
from tufwaves.server.rollout import WaveContext, load_wave, tree_path

__all__ = ["BundlePlan", "BundleSource", "build_bundle"]

FILE_CACHE_BYTES = 64 << 20
"""Published files a :class:`BundleSource` keeps in memory (the rest is read per bundle)."""


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
    :meth:`tufwaves.verify.Verifier.decide`. A server that builds many
    bundles of one published state keeps a :class:`BundleSource` instead.

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
    source = BundleSource(repo, state)
    try:
        return source.plan(inv, uuid, since_root=since_root, waves=waves).bundle()
    finally:
        source.close()


@dataclass(frozen=True)
class BundlePlan:
    """Which files and evidence one device's bundle holds, before any is read.

    Every file is a versioned, immutable published file and the evidence is
    fixed by its ripple's tree file, so the plan determines the bundle's
    bytes: :attr:`etag` identifies them without building the bundle.

    Attributes:
        source: The published state the plan belongs to.
        device: The device's canonical UUID.
        files: ``(role, version)`` of every file, in bundle order.
        evidence: ``(wave, index)`` of every Merkle ripple whose evidence is included.
    """

    source: BundleSource
    device: str
    files: tuple[tuple[str, int], ...]
    evidence: tuple[tuple[str, int], ...]

    @property
    def etag(self) -> str:
        """A strong HTTP entity tag of the bundle's bytes (a quoted hex string)."""
        h = hashlib.sha256(b"tufwaves-bundle-etag-v1\x00")
        h.update(hashlib.sha256(self.source.state.timestamp_bytes).digest())
        h.update(repr((self.device, self.files, self.evidence)).encode("ascii"))
        return '"' + h.hexdigest()[:32] + '"'

    def bundle(self) -> Bundle:
        """The bundle: the files' published bytes and the device's Merkle evidence.

        Returns:
            The bundle.

        Raises:
            StorageError: A file or tree file cannot be read.
        """
        source = self.source
        files = tuple(BundleFile(role, v, source.file_bytes(role, v)) for role, v in self.files)
        proofs = []
        for name, index in self.evidence:
            proof = source.tree(name, index).evidence(self.device, ripple_role(name, index))
            if proof is not None:
                proofs.append(proof)
        return Bundle(self.device, files, tuple(proofs))


class BundleSource:
    """What every bundle of one published state shares, computed once.

    The parsed waves (with their fraction salts), the encoding of every
    ripple (read from the published ripple role, so it belongs to this very
    state) and the open Merkle tree files. Safe to share between threads;
    a new published state needs a new source. :meth:`close` releases the
    tree files.
    """

    def __init__(self, repo: Repository, state: PublishedState | None = None) -> None:
        """The source for ``state`` (default: the repository's current state).

        Args:
            repo: The repository.
            state: The published state every bundle is read from.
        """
        self.repo = repo
        self.state = state or repo.state()
        self.wave_names = sorted(
            r.removeprefix("wave.") for r in self.state.roles() if r.startswith("wave.")
        )
        self._lock = threading.Lock()
        self._waves: dict[str, WaveContext] = {}
        self._fractions: dict[str, frozenset[int]] = {}
        self._trees: dict[tuple[str, int], MerkleTreeFile] = {}
        self._encodings: dict[tuple[str, int], str] = {}
        self._files: dict[tuple[str, int], bytes] = {}
        self._file_budget = FILE_CACHE_BYTES

    def wave(self, name: str) -> WaveContext:
        """The published wave ``name`` (parsed once).

        Args:
            name: The wave's name.

        Returns:
            The wave in this state.

        Raises:
            InputError: No such published wave.
        """
        wave = self._waves.get(name)
        if wave is None:
            wave = load_wave(self.repo, name, self.state)
            with self._lock:
                wave = self._waves.setdefault(name, wave)
        return wave

    def fraction_ripples(self, wave: WaveContext) -> frozenset[int]:
        """Indexes of the wave's fraction ripples (every device gets those).

        Args:
            wave: A wave of this state (from :meth:`wave`).

        Returns:
            The indexes, read from the published ripple roles once per wave.
        """
        found = self._fractions.get(wave.name)
        if found is None:
            found = frozenset(
                index
                for index in range(1, wave.ripple_count + 1)
                if self.encoding(wave.name, index) == "fraction"
            )
            with self._lock:
                found = self._fractions.setdefault(wave.name, found)
        return found

    def tree(self, name: str, index: int) -> MerkleTreeFile:
        """The open tree file of Merkle ripple ``index`` of wave ``name``.

        Args:
            name: The wave's name.
            index: The ripple's index.

        Returns:
            The tree file, opened once and shared.

        Raises:
            StorageError: The tree file cannot be read.
        """
        key = (name, index)
        tree = self._trees.get(key)
        if tree is None:
            opened = MerkleTreeFile(tree_path(self.repo, name, index))
            with self._lock:
                tree = self._trees.setdefault(key, opened)
            if tree is not opened:
                opened.close()
        return tree

    def file_bytes(self, role: str, version: int) -> bytes:
        """The published bytes of version ``version`` of ``role``.

        Args:
            role: The role; ``timestamp`` is this state's timestamp.
            version: The version.

        Returns:
            The file's exact bytes.

        Raises:
            StorageError: The file cannot be read.
        """
        if role == "timestamp":
            return self.state.timestamp_bytes
        key = (role, version)
        data = self._files.get(key)
        if data is None:
            data = self.repo.role_bytes(role, version)
            with self._lock:
                if len(data) <= self._file_budget and key not in self._files:
                    self._files[key] = data  # published versions never change
                    self._file_budget -= len(data)
        return data

    def encoding(self, wave: str, index: int) -> str:
        """The membership encoding of ripple ``index`` of ``wave`` as this state published it.

        Args:
            wave: The wave's name.
            index: The ripple's index.

        Returns:
            ``list-v1``, ``merkle-sha256`` or ``fraction`` (read once).

        Raises:
            StorageError: The published ripple role has no membership encoding.
        """
        key = (wave, index)
        found = self._encodings.get(key)
        if found is None:
            found = _encoding(self.repo, self.state, wave, index)
            with self._lock:
                found = self._encodings.setdefault(key, found)
        return found

    def plan(
        self,
        inv: Inventory,
        uuid: str,
        *,
        since_root: int = 1,
        waves: Sequence[str] | None = None,
        device: Device | None = None,
    ) -> BundlePlan:
        """The plan of device ``uuid``'s bundle.

        Args:
            inv: The repository's inventory.
            uuid: The device.
            since_root: As :func:`build_bundle`.
            waves: As :func:`build_bundle`.
            device: The device's inventory record, when the caller has just
                read it (saves a look-up); otherwise it is read from ``inv``.

        Returns:
            The plan; :meth:`BundlePlan.bundle` reads the files.

        Raises:
            InputError: As :func:`build_bundle`.
        """
        uuid = canonical_uuid(uuid)
        if device is None or device.uuid != uuid:
            device = inv.get(uuid)
        if device is None and waves is None:
            raise InputError(
                f"device {uuid} is not in the inventory; import it ('tufwaves fleet import') "
                "or name the waves with --wave"
            )
        state = self.state
        if not 1 <= since_root <= state.root_version:
            raise InputError(
                f"--since-root {since_root} is not a published root version "
                f"(1..{state.root_version})"
            )
        files: list[tuple[str, int]] = [
            ("root", v) for v in range(since_root + 1, state.root_version + 1)
        ]
        files.append(("timestamp", state.timestamp.signed.version))
        files.append(("snapshot", state.snapshot.signed.version))
        files.append(_versioned(state, "targets"))
        names = self.wave_names
        if waves is not None:
            unknown = sorted(set(waves) - set(names))
            if unknown:
                raise InputError(f"no published wave {', '.join(unknown)}")
            names = sorted(set(waves))
        selections = dict(inv.device_selections(uuid)) if device else {}
        evidence: list[tuple[str, int]] = []
        contexts = [self.wave(name) for name in names]
        if waves is None and device is not None:
            contexts = [
                w
                for w in contexts
                if w.info.tag == device.tag and device.hardware_id in w.hardware_ids
            ]
            contexts = _still_relevant(contexts, device.installed_version, self.repo.now())
        for wave in contexts:
            name = wave.name
            if wave.rollout is None:
                continue  # no rollout role signed yet: the wave lets no device in
            files.append(_versioned(state, wave_role(name)))
            files.append(_versioned(state, rollout_role(name)))
            fractions = self.fraction_ripples(wave)
            selected = selections.get(name)
            for index in range(1, wave.ripple_count + 1):
                if index in fractions or selected == index:
                    files.append(_versioned(state, ripple_role(name, index)))
                if (
                    selected == index
                    and index not in fractions
                    and self.encoding(name, index) == "merkle-sha256"
                ):
                    evidence.append((name, index))
        return BundlePlan(self, uuid, tuple(files), tuple(evidence))

    def close(self) -> None:
        """Close the tree files opened so far."""
        with self._lock:
            trees, self._trees = list(self._trees.values()), {}
        for tree in trees:
            tree.close()


def _encoding(repo: Repository, state: PublishedState, wave: str, index: int) -> str:
    """The membership encoding of ripple ``index`` as this state published it."""
    ripple = repo.load_targets(ripple_role(wave, index), state)
    field = ripple.signed.unrecognized_fields.get(RIPPLE_FIELD)
    membership = field.get("membership") if isinstance(field, dict) else None
    encoding = membership.get("encoding") if isinstance(membership, dict) else None
    if not isinstance(encoding, str):
        raise StorageError(f"published {ripple_role(wave, index)} has no membership encoding")
    return encoding


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


def _versioned(state: PublishedState, role: str) -> tuple[str, int]:
    version = state.version_of(role)
    if version is None:
        raise InputError(f"role {role} is not published")
    return role, version
