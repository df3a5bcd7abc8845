"""Private by default: after every command, nothing under the home is readable by anyone but its owner,
whatever the umask the user runs with; ``init`` tightens a home left looser and says so."""

from __future__ import annotations

import gzip
import os
import stat
import time

import pytest

from lake.home import Home


def loose_paths(root) -> list[str]:
    """Paths under ``root`` (itself included) with any group or other permission bit."""
    return [f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p}" for p in [root, *root.rglob("*")]
            if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077]


@pytest.fixture
def open_umask():
    """Run as a user with the common umask 022 (files 0644 unless chatlake says otherwise)."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_every_command_leaves_the_home_owner_only(chatlake, home, tmp_path, open_umask):
    bad = tmp_path / "chats.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]}\n')
        f.write('{"messages": "not a list"}\n')
    commands = [
        ("init",),
        ("log", "-c", "trip", "-u", "Best time for Lisbon?", "-a", "Spring, or early autumn.", "--user-id", "ann"),
        ("feedback", "trip", "--message", "trip/1", "--up"),
        ("tag", "trip", "travel"),
        ("ingest", str(bad)),
        ("sql", "SELECT count(*) FROM messages"),
        ("stats", "--json"),
        ("compact", "--retain-hours", "0"),
        ("snapshot", "create", "--name", "first"),
        ("snapshot", "export", "1", "-f", "chatml", "-o", str(home.root / "exports" / "one")),
        ("forget", "--user", "ann"),
        ("history",),
        ("watch", "--once"),  # imports the file dropped into the inbox, and keeps it in processed/
    ]
    for args in commands:
        if args[0] == "watch":
            (home.inbox_dir / "drop.jsonl").write_text(  # dropped by the user, with the user's umask (0644)
                '{"messages": [{"role": "user", "content": "from the inbox"}, {"role": "assistant", "content": "ok"}]}\n')
            time.sleep(1.0)  # settled (watch.inbox_settle_seconds)
        os.umask(0o022)  # whatever the user's umask was before each command
        r = chatlake(*args)
        assert r.code == 0, (args, r.err)
        assert loose_paths(home.root) == [], args
    assert len(list(home.processed_dir.iterdir())) == 1


def test_init_tightens_a_loose_home_and_says_so(chatlake, home, open_umask):
    (home.root / "lake" / "stray.parquet").write_bytes(b"PAR1")
    os.chmod(home.root, 0o755)
    os.chmod(home.root / "lake", 0o755)
    os.chmod(home.root / "lake" / "stray.parquet", 0o644)
    r = chatlake("init")
    assert r.code == 0, r.err
    assert "tightened 3 paths" in r.err and "owner-only" in r.err
    assert loose_paths(home.root) == []
    assert "tightened" not in chatlake("init").err  # nothing left to say


def test_a_library_user_gets_a_private_home_folder(tmp_path, open_umask):
    """Without the CLI (the logger in someone's app), the home folder itself is 0700: nothing under it is
    reachable by another user, whatever the files' own modes."""
    home = Home.resolve(tmp_path / "lib-home").ensure()
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    os.chmod(home.root, 0o755)
    Home.resolve(home.root).ensure()
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
