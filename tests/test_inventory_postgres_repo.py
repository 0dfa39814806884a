"""A repository on a PostgreSQL inventory: choosing it, migrating to it, its lock.

These tests need PostgreSQL (tests/postgres.py): they skip, saying why,
without a reachable server, and fail instead with TUFWAVES_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid as uuid_mod
from pathlib import Path

import pytest

from tests.conftest import KeyStore, RepoFactory, publish_wave, tree_digest
from tests.postgres import pg_dsn, pg_dsn2  # noqa: F401 - fixtures
from tufwaves.cli import main
from tufwaves.errors import InputError, RefusedError, StorageError
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.inventory.backend import open_postgres
from tufwaves.server.inventory.dsn import CONFIG_KEY, INVENTORY_ENV, REPOSITORY_ID_KEY, redact
from tufwaves.server.inventory_migration import migrate_inventory, use_inventory
from tufwaves.server.repository import CONFIG_NAME, Repository
from tufwaves.server.rollout import Selector, open_inventory, rollout

ROOT = Path(__file__).resolve().parent.parent


def dev(n: int) -> str:
    return str(uuid_mod.UUID(int=n * 0x9E3779B97F4A7C15 + 1))


FLEET = [
    DeviceRow(dev(i), "hw1", "prod", frozenset({"eu" if i % 2 else "us"}), 5) for i in range(60)
]


@pytest.fixture
def sqlite_repo(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Repository:
    """A repository on SQLite with a fleet, a wave and two ripples."""
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        inv.audit("fleet import", [], {"rows": len(FLEET)})
        rollout(repo, inv, "w1", Selector(limit=5, seed="one"))
        rollout(repo, inv, "w1", Selector(group="eu", limit=7, seed="two"))
    return repo


def snapshot(repo: Repository) -> dict[str, object]:
    with open_inventory(repo) as inv:
        return {
            "devices": [d.to_dict() for d in inv.list_devices()],
            "ripples": [r.to_dict() for r in inv.ripples("w1")],
            "members": [list(inv.ripple_members("w1", i)) for i in (1, 2)],
            "audit": [a.to_dict() for a in inv.audit_log()],
        }


def test_migrate_copies_everything_then_switches(sqlite_repo: Repository, pg_dsn: str) -> None:  # noqa: F811
    before = snapshot(sqlite_repo)
    sqlite_file = tree_digest(sqlite_repo.path)["inventory.sqlite"]
    result = migrate_inventory(sqlite_repo, pg_dsn)
    assert result.counts["devices"] == 60
    assert result.counts["ripples"] == 2
    assert result.counts["selections"] == 12
    assert result.counts["audit"] == 3
    assert not result.resumed
    repo = Repository.open(sqlite_repo.path)
    assert repo.config[CONFIG_KEY] == pg_dsn
    assert repo.config[REPOSITORY_ID_KEY]
    with open_inventory(repo) as inv:
        assert type(inv).__name__ == "PostgresInventory"
    assert snapshot(repo) == before
    assert tree_digest(repo.path)["inventory.sqlite"] == sqlite_file  # left as it was
    # Rollouts go on from PostgreSQL, skipping what SQLite had recorded.
    with open_inventory(repo) as inv:
        third = rollout(repo, inv, "w1", Selector(limit=10, seed="three"))
        assert third.index == 3
        assert not set(third.uuids) & {u for m in before["members"] for u in m}  # type: ignore[attr-defined]
        audit = inv.audit_log()
        assert audit[-1].action == "ripple"
        assert audit[-1].id > audit[-2].id  # new ids follow the copied ones
    with pytest.raises(RefusedError, match="already uses"):
        migrate_inventory(repo, pg_dsn)


def test_migration_refuses_a_used_target(sqlite_repo: Repository, pg_dsn: str) -> None:  # noqa: F811
    with open_postgres(pg_dsn) as other:
        other.audit("something", [], {})
    with pytest.raises(RefusedError, match="not empty"):
        migrate_inventory(sqlite_repo, pg_dsn)
    assert CONFIG_KEY not in Repository.open(sqlite_repo.path).config


def _kill_script(repo: Path, dsn: str, where: str) -> str:
    return textwrap.dedent(
        f"""
        import os, signal
        from tufwaves.server import inventory_migration
        from tufwaves.server.inventory import postgres
        from tufwaves.server.repository import Repository

        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        if {where!r} == "copy":
            postgres.PostgresInventory.reset_sequences = die
        else:
            inventory_migration._switch = die
        inventory_migration.migrate_inventory(Repository.open({str(repo)!r}), {dsn!r})
        """
    )


def test_a_killed_migration_leaves_the_repository_on_sqlite(
    sqlite_repo: Repository,
    pg_dsn: str,  # noqa: F811
) -> None:
    before = snapshot(sqlite_repo)
    config = (sqlite_repo.path / CONFIG_NAME).read_bytes()
    for where in ("copy", "switch"):
        child = subprocess.run(
            [sys.executable, "-c", _kill_script(sqlite_repo.path, pg_dsn, where)],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        assert child.returncode == -9, child.stderr
        assert (sqlite_repo.path / CONFIG_NAME).read_bytes() == config
        assert snapshot(Repository.open(sqlite_repo.path)) == before
        with open_postgres(pg_dsn) as target:
            # Killed mid-copy, nothing was committed; killed before the
            # switch, the verified copy is there but unused.
            assert target.is_empty() == (where == "copy")
    result = migrate_inventory(Repository.open(sqlite_repo.path), pg_dsn)
    assert result.resumed
    repo = Repository.open(sqlite_repo.path)
    assert repo.config[CONFIG_KEY] == pg_dsn
    assert snapshot(repo) == before


def test_repository_lock_holds_across_machines(
    make_repo: RepoFactory,
    pg_dsn: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = make_repo()
    use_inventory(here, pg_dsn)
    # "Another machine": its own copy of the repository directory, so the
    # file lock does not meet; only the PostgreSQL advisory lock can.
    there_path = here.path.parent / "elsewhere"
    shutil.copytree(here.path, there_path)
    there = Repository.open(there_path)
    monkeypatch.setenv("TUFWAVES_LOCK_TIMEOUT", "0.3")
    with here.locked(), pytest.raises(StorageError, match="another machine"), there.locked():
        pass
    with there.locked():
        pass
    # A different repository on the same server has another key.
    use_inventory(there, pg_dsn)
    config = dict(there.config)
    config[REPOSITORY_ID_KEY] = "another repository"
    there.write_config(config)
    with here.locked(), there.locked():
        pass


def _keys(tmp_path: Path) -> Path:
    d = tmp_path / "cli-keys"
    for name in ("root", "t1"):
        assert main(["keys", "generate", name, "--dir", str(d)]) == 0
    return d


def test_init_takes_the_inventory_from_the_environment_and_show_redacts(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = _keys(tmp_path)
    monkeypatch.setenv(INVENTORY_ENV, pg_dsn)
    repo = tmp_path / "repo"
    argv = ["repo", "init", str(repo), "--root-key", str(keys / "root.key")]
    assert main([*argv, "--targets-key", str(keys / "t1.key")]) == 0
    config = json.loads((repo / CONFIG_NAME).read_text())
    assert config[CONFIG_KEY] == pg_dsn
    capsys.readouterr()
    assert main(["repo", "show", "--repo", str(repo), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["inventory"] == f"PostgreSQL {pg_dsn}"
    assert main(["fleet", "report", dev(1), "--installed-version", "1", "--repo", str(repo)]) == 2
    with open_postgres(pg_dsn) as inv:
        inv.import_rows(FLEET[:2])
    assert main(["fleet", "report", dev(1), "--installed-version", "7", "--repo", str(repo)]) == 0
    assert not (repo / "inventory.sqlite").exists()


def test_a_dsn_with_a_password_is_refused_and_never_shown(
    tmp_path: Path,
    sqlite_repo: Repository,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "hunter2-secret"
    dsn = f"postgresql://postgres:{secret}@127.0.0.1:5432/test"
    with pytest.raises(InputError, match="password") as err:
        migrate_inventory(sqlite_repo, dsn)
    assert secret not in str(err.value)
    code = main(["repo", "migrate-inventory", "--repo", str(sqlite_repo.path), "--to", dsn])
    out, errors = capsys.readouterr()
    assert code == 2
    assert secret not in out + errors
    query_form = f"postgresql://postgres@127.0.0.1/test?password={secret}&sslmode=disable"
    assert secret not in redact(query_form)
    with pytest.raises(InputError, match="password") as err:
        migrate_inventory(sqlite_repo, query_form)
    assert secret not in str(err.value)
    keys = _keys(tmp_path)
    argv = ["repo", "init", str(tmp_path / "new"), "--root-key", str(keys / "root.key")]
    code = main([*argv, "--targets-key", str(keys / "t1.key"), "--inventory", dsn])
    out, errors = capsys.readouterr()
    assert code == 2
    assert secret not in out + errors
    assert not (tmp_path / "new").exists()


def test_another_repositorys_inventory_is_refused_at_init(
    tmp_path: Path,
    pg_dsn2: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    with open_postgres(pg_dsn2) as inv:
        inv.import_rows(FLEET[:1])
    keys = _keys(tmp_path)
    argv = ["repo", "init", str(tmp_path / "new"), "--root-key", str(keys / "root.key")]
    code = main([*argv, "--targets-key", str(keys / "t1.key"), "--inventory", pg_dsn2])
    assert code != 0
    assert "not empty" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
