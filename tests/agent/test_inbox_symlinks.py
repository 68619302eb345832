"""Issue 11 item 1: a non-root user who can write the inbox must not make the root agent
write where it points. The attacker's steps run as a real other user (``setpriv``); the
agent runs as root, in-process and through ``deltaport agent run --once``."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deltaport.agent import Agent, AgentConfig
from deltaport.errors import StorageError
from tests.agent.conftest import DEVICE, World, agent_config, image_id_in
from tests.fixtures.services import Registry

ATTACKER = "dpattacker"
SECRET = b"root's secret: must never change\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the agent under attack runs as root")


@dataclass(frozen=True)
class Arena:
    """A world-traversable folder: the attacker's inbox, a root-only folder and file."""

    inbox: Path  # owned by the attacker (the transfer tool's user)
    rootonly: Path  # 0700 root: nothing may land here
    secret: Path  # 0600 root: must stay as it is
    public: Path  # bundles the attacker can read and copy
    uid: int
    gid: int

    def attack(self, script: str) -> None:
        """Run shell SCRIPT in the inbox as the attacker (no root, no groups)."""
        subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                        "--clear-groups", "sh", "-euc", script], cwd=self.inbox, check=True,
                       timeout=30)


def _attacker() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(ATTACKER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", ATTACKER],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create the attacking user: {made.stderr.strip()}")
    return pwd.getpwnam(ATTACKER)


@pytest.fixture
def arena(world: World) -> Iterator[Arena]:
    user = _attacker()
    root = Path(tempfile.mkdtemp(prefix="dp-inbox-arena-"))  # pytest's tmp is 0700
    root.chmod(0o755)
    inbox, rootonly, public = root / "inbox", root / "rootonly", root / "public"
    inbox.mkdir(mode=0o755)
    os.chown(inbox, user.pw_uid, user.pw_gid)
    rootonly.mkdir(mode=0o700)
    public.mkdir(mode=0o755)
    for name, built in (("good.bundle", world.small), ("evil.bundle", world.small_untrusted)):
        shutil.copyfile(built.path, public / name)
        (public / name).chmod(0o644)
    secret = root / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    try:
        yield Arena(inbox, rootonly, secret, public, user.pw_uid, user.pw_gid)
    finally:
        shutil.rmtree(root)


def _config(tmp_path: Path, world: World, registry: Registry, arena: Arena) -> AgentConfig:
    return agent_config(tmp_path, world, registry.host, inbox=arena.inbox,
                        inbox_settle_seconds=0.0)


def _cli_once(tmp_path: Path, world: World, config: AgentConfig,
              registry: Registry) -> subprocess.CompletedProcess[str]:
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'device = "{DEVICE}"\ntrusted_keys = ["{world.trusted_pub}"]\n'
        f'inbox = "{config.inbox}"\nstate_dir = "{config.state_dir}"\n'
        f'registry = "docker://{registry.host}"\ninbox_settle_seconds = 0\n')
    return subprocess.run([sys.executable, "-m", "deltaport.cli.main", "agent", "run", "--once",
                           "--config", str(toml)], capture_output=True, text=True, timeout=120)


def _untouched(arena: Arena) -> None:
    assert arena.secret.read_bytes() == SECRET
    assert stat.S_IMODE(arena.secret.stat().st_mode) == 0o600
    assert list(arena.rootonly.iterdir()) == []


@pytest.mark.parametrize(("folder", "bundle"), [("failed", "evil.bundle"),
                                                ("done", "good.bundle")])
def test_own_folder_swapped_for_a_symlink_is_refused(
        tmp_path: Path, world: World, device_registry: Registry, arena: Arena,
        folder: str, bundle: str) -> None:
    config = _config(tmp_path, world, device_registry, arena)
    with Agent(config) as agent:  # creates done/ and failed/ as root
        arena.attack(f"rmdir {folder} 2>/dev/null || true; ln -s {arena.rootonly} {folder}; "
                     f"cp {arena.public / bundle} x.bundle")
        try:
            agent.run_once()
            refusal = None
        except StorageError as exc:
            refusal = str(exc)
    _untouched(arena)  # first: what the old agent did was write into rootonly/
    assert refusal is not None and f"refusing to work: {arena.inbox / folder} is a symbolic" \
        in refusal
    assert (arena.inbox / "x.bundle").is_file()  # left where the attacker put it
    assert image_id_in(device_registry, world.small.target) is None
    with pytest.raises(StorageError, match="refusing to work"):
        Agent(config)  # and it will not start on it either
    run = _cli_once(tmp_path, world, config, device_registry)
    assert run.returncode != 0
    assert "refusing to work" in run.stderr and "symbolic link" in run.stderr
    _untouched(arena)


def test_failed_folder_made_by_the_attacker_with_planted_reason_links_is_refused(
        tmp_path: Path, world: World, device_registry: Registry, arena: Arena) -> None:
    config = _config(tmp_path, world, device_registry, arena)
    arena.attack(f"mkdir failed; ln -s {arena.secret} failed/.evil.bundle.reason.tmp; "
                 f"ln -s {arena.secret} failed/evil.bundle.reason; "
                 f"cp {arena.public / 'evil.bundle'} evil.bundle")
    with pytest.raises(StorageError, match=rf"failed is owned by uid {arena.uid}, not by the"):
        Agent(config)
    run = _cli_once(tmp_path, world, config, device_registry)
    assert run.returncode != 0 and f"owned by uid {arena.uid}" in run.stderr
    _untouched(arena)
    assert (arena.inbox / "evil.bundle").is_file()


def test_reason_links_planted_in_a_writable_failed_folder_are_not_followed(
        tmp_path: Path, world: World, device_registry: Registry, arena: Arena) -> None:
    config = _config(tmp_path, world, device_registry, arena)
    with Agent(config) as agent:
        (arena.inbox / "failed").mkdir(exist_ok=True)
        (arena.inbox / "failed").chmod(0o777)  # root's own folder, carelessly writable
        arena.attack(f"ln -s {arena.secret} failed/.evil.bundle.reason.tmp; "
                     f"cp {arena.public / 'evil.bundle'} evil.bundle")
        report = agent.run_once()
    assert report.inbox_failed == 1
    _untouched(arena)
    failed = arena.inbox / "failed"
    reason = failed / "evil.bundle.reason"
    assert "SignatureError" in reason.read_text()
    assert not reason.is_symlink() and reason.stat().st_uid == 0
    assert (failed / "evil.bundle").is_file()
    assert (failed / ".evil.bundle.reason.tmp").is_symlink()  # left as planted, unfollowed


def test_fifo_symlink_and_folder_dropped_in_the_inbox_are_moved_aside(
        tmp_path: Path, world: World, device_registry: Registry, arena: Arena) -> None:
    config = _config(tmp_path, world, device_registry, arena)
    with Agent(config) as agent:
        arena.attack(f"mkfifo pipe.bundle; ln -s {arena.secret} link.bundle; "
                     f"mkdir dir.bundle; cp {arena.public / 'good.bundle'} dir.bundle/inner")
        report = agent.run_once()
        again = agent.run_once()
    assert report.inbox_failed == 3 and again.inbox_failed == 0
    _untouched(arena)
    failed = arena.inbox / "failed"
    assert stat.S_ISFIFO((failed / "pipe.bundle").lstat().st_mode)
    assert os.readlink(failed / "link.bundle") == str(arena.secret)  # moved, not followed
    assert (failed / "dir.bundle" / "inner").is_file()
    for name, kind in (("pipe.bundle", "FIFO"), ("link.bundle", "symbolic link"),
                       ("dir.bundle", "folder")):
        assert f"not a regular file but a {kind}" in (failed / f"{name}.reason").read_text()
    assert sorted(p.name for p in arena.inbox.iterdir()) == ["done", "failed"]
    assert any("FIFO" in f for f in report.failures)
    assert image_id_in(device_registry, world.small.target) is None  # dir/inner not taken


def test_a_fifo_or_link_swapped_in_is_never_opened_for_reading(arena: Arena) -> None:
    from deltaport.agent.inboxscan import open_dirs, open_regular  # new: the old code has none

    arena.attack(f"mkfifo fifo; ln -s {arena.secret} link; echo data > plain")
    dirs = open_dirs(arena.inbox, os.geteuid())
    try:
        with open_regular(dirs, "fifo") as opened:  # O_NONBLOCK: returns, does not block
            assert opened is None
        with open_regular(dirs, "link") as opened:
            assert opened is None
        with open_regular(dirs, "plain") as opened:
            assert opened is not None and opened[1].st_size == 5
    finally:
        dirs.close()
