"""SQL models: one object (macro, view or table) per ``.sql`` file, named for it, in folders by role.

As in dbt, ``features/clean_messages.sql`` defines ``clean_messages`` and nothing else, and the folders say
what a file is for (``macros/``, ``staging/``, ``features/``, ...). The order in which files are applied is
derived from their references, not kept in file-name digits: a file whose SQL (outside comments) names
another file's object comes after it. Order matters for macros, which DuckDB binds when they are created;
views are created unbound (``deferred``), so they only need what they name to exist when a query reads them.

Each layer keeps its SQL beside its code and hands it to ``lake.connect``: the lake's views in ``lake/sql/``,
the registry's in ``registry/sql/``, the snapshots' in ``pipelines/snapshot/sql/views/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import duckdb

from lake.home import Home
from schemas.errors import ChatlakeError

MACROS = "macros"  # the folder of functions, which reference nothing but each other
_CREATE = re.compile(r"^CREATE OR REPLACE (?:TEMP )?(?:MACRO|VIEW|TABLE) (\w+)", re.MULTILINE)
_VIEW = re.compile(r"\bCREATE OR REPLACE (TEMP )?VIEW (\w+) AS\b")
_COMMENT = re.compile(r"--[^\n]*")
_WORD = re.compile(r"\b[A-Za-z_]\w*\b")


def deferred(sql: str) -> str:
    """``sql`` with every ``CREATE OR REPLACE [TEMP] VIEW name AS`` made ``... WITH (DEFER_BINDING) AS``: the
    view is bound when a query reads it, not when it is created (binding a view binds its whole tree of
    views, and reads the metadata of the Parquet files beneath). A mistake in a view then shows at its first
    use, which the tests make for every view."""
    return _VIEW.sub(lambda m: f"CREATE OR REPLACE {m[1] or ''}VIEW {m[2]} WITH (DEFER_BINDING) AS", sql)


def sql_str(value: str | Path) -> str:
    """``value`` as a SQL string literal's inside (quotes doubled): the one quoting rule for paths and names
    spliced into SQL where a parameter cannot go (DDL, table function arguments)."""
    return str(value).replace("'", "''")


def sql_list(values: Iterable[str | Path]) -> str:
    """A SQL list literal of strings: ``['a', 'b']``."""
    return "[" + ", ".join(f"'{sql_str(v)}'" for v in values) + "]"


class SqlModels:
    """The ``.sql`` files under ``root``: each defines the object its file is named for (checked on load).

    ``generated`` adds macros made from data at import (``{name: SQL}``, e.g. the secret rules of
    ``lake.redaction``): they take part in the order, closures and digests as if they were files of
    ``macros/``."""

    def __init__(self, root: Path, generated: dict[str, str] | None = None):
        self.root = root
        self.files: dict[str, Path] = {}
        self.text: dict[str, str] = {}
        sources = [(path.stem, path, None) for path in sorted(root.rglob("*.sql"))]
        sources += [(name, root / MACROS / f"{name}.sql", text) for name, text in (generated or {}).items()]
        for name, path, text in sources:
            if name in self.files:
                raise ChatlakeError(f"two SQL models named {name}: {self.files[name]} and {path}")
            text = path.read_text() if text is None else text
            defined = _CREATE.findall(text)
            if defined != [name]:
                raise ChatlakeError(f"{path} must define exactly one object, {name}; it defines {defined or 'none'}")
            self.files[name], self.text[name] = path, text
        # asked once per pair of models while the references are found: worked out once, not each time
        self.folders = {name: path.parent.relative_to(root).as_posix().removeprefix(".")
                        for name, path in self.files.items()}
        self.references = {name: self._references(name) for name in self.files}
        try:
            # From sorted lists, not the sets: a set's order changes with the process's string hashing, and
            # this order feeds the cache fingerprints (digest), which must be the same in every process.
            self.order = list(TopologicalSorter({n: sorted(r) for n, r in self.references.items()}).static_order())
        except CycleError as exc:
            raise ChatlakeError(f"SQL models under {root} reference each other in a cycle: {exc.args[1]}") from None

    def _references(self, name: str) -> set[str]:
        """The models whose names appear in ``name``'s SQL outside comments. A macro (in ``macros/``) is a
        function of its arguments: it can reference other macros only, so a parameter or column that happens
        to share a view's name (``events``, ``messages``) is not taken for one."""
        words = set(_WORD.findall(_COMMENT.sub("", self.text[name])))
        candidates = [o for o in self.files if self.folder(o) == MACROS] if self.folder(name) == MACROS else self.files
        return {other for other in candidates if other != name and other in words}

    def folder(self, name: str) -> str:
        """The role folder of a model (its path below ``root``, ``""`` at the top)."""
        return self.folders[name]

    def ordered(self, folders: Iterable[str] | None = None) -> list[str]:
        """Every model (or those in ``folders``) in an order that puts each after what it references."""
        wanted = None if folders is None else set(folders)
        return [n for n in self.order if wanted is None or self.folder(n) in wanted]

    def closure(self, *names: str) -> list[str]:
        """``names`` and every model they reference, directly or not, in order."""
        needed, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo.extend(self.references[name])
        return [n for n in self.order if n in needed]

    def apply(self, con: duckdb.DuckDBPyConnection, names: Iterable[str]) -> None:
        """Create ``names`` on ``con``, in the given order (views unbound)."""
        for name in names:
            con.execute(deferred(self.text[name]))

    def digest(self, names: Iterable[str]) -> hashlib._Hash:
        """A SHA-256 over the text of ``names`` (for fingerprints of what a cache was computed with), taken in
        name order: ``order`` comes from sets of strings, whose order changes from one process to the next, and
        a fingerprint that did too would make every process compute the caches again."""
        digest = hashlib.sha256()
        for name in sorted(names):
            digest.update(self.text[name].encode())
        return digest


@dataclass(frozen=True)
class ViewLayer:
    """The SQL models a layer above the lake adds to a connection, and what it binds on every (re)bind: the
    relations and variables its views read (the registry's table, the snapshots' folder)."""

    models: SqlModels
    bind: Callable[[duckdb.DuckDBPyConnection, Home], None] | None = field(default=None)
