"""SQL models laid out like dbt: one object per file, named for it, in folders by role, ordered by reference."""

from __future__ import annotations

import duckdb
import pytest

from lake.sqlmodels import SqlModels, sql_list, sql_str
from lake.views import MODELS
from pipelines.snapshot.catalog import VIEWS as SNAPSHOT_VIEWS
from registry.models import VIEWS as REGISTRY_VIEWS
from schemas.errors import ChatlakeError

ROLES = {"macros", "staging", "features", "quality", "stats"}


def test_the_lake_sql_is_in_role_folders_one_object_per_file():
    assert {MODELS.folder(name) for name in MODELS.files} == ROLES
    for models in (MODELS, REGISTRY_VIEWS.models, SNAPSHOT_VIEWS.models):
        for name, path in models.files.items():
            assert path.stem == name and not path.stem[0].isdigit()  # no order in file names
    assert "clean_messages" in MODELS.files and MODELS.folder("clean_messages") == "features"
    assert MODELS.folder("stats_daily") == "stats" and "model_versions" not in MODELS.files  # the registry's own
    assert "model_versions" in REGISTRY_VIEWS.models.files and "snapshots" in SNAPSHOT_VIEWS.models.files


def test_each_model_comes_after_what_it_references():
    for models in (MODELS, REGISTRY_VIEWS.models):
        position = {name: i for i, name in enumerate(models.order)}
        for name, references in models.references.items():
            assert all(position[r] < position[name] for r in references), name
    assert {"redact_secrets", "re_url", "re_work", "replace_each"} <= MODELS.references["clean_texts_of"]
    assert {"text_features_of", "message_parts_of"} <= MODELS.references["message_features_of"]
    # a macro is a function: a parameter named like a view (`events`) is not taken for the view
    assert "events" not in MODELS.references["message_features_of"]
    assert "messages" in MODELS.references["clean_messages"]


def test_each_file_is_applied_once_per_connection(monkeypatch, home):
    """The macros before the data is bound, the views after; a re-bind applies nothing again."""
    from lake.connect import bind, connect

    applied = []
    original = SqlModels.apply
    monkeypatch.setattr(SqlModels, "apply", lambda self, con, names: (applied.extend(names := list(names)),
                                                                      original(self, con, names)))
    con = connect(home)
    assert sorted(applied) == sorted(MODELS.files)
    bind(con, home)
    assert sorted(applied) == sorted(MODELS.files)
    assert con.execute("SELECT count(*) FROM clean_messages").fetchone() == (0,)


def test_closure_and_digest_follow_the_references():
    closure = MODELS.closure("message_features_of")
    assert closure[-1] == "message_features_of" and "clean_messages" not in closure
    # the macros lake.redaction makes of its rules table are models like the files
    assert {"redact_secrets", "re_secret_hint"} <= set(closure) and MODELS.folder("redact_secrets") == "macros"
    assert MODELS.digest(closure).hexdigest() != MODELS.digest(closure[:-1]).hexdigest()


def test_the_order_and_the_cache_fingerprints_are_the_same_in_every_process():
    """String hashing differs per process (PYTHONHASHSEED): the order, and the fingerprints of the feature
    cache it feeds, must not, or no process would find what another one cached."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("from lake.views import MODELS, fingerprint; "
            "print(fingerprint('US'), MODELS.digest(MODELS.order).hexdigest())")
    root = Path(__file__).resolve().parents[2]
    seen = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(seen) == 1, seen


def test_a_folder_that_breaks_the_rules_is_refused(tmp_path):
    (tmp_path / "macros").mkdir()
    (tmp_path / "macros" / "twice.sql").write_text("CREATE OR REPLACE MACRO twice(x) AS double(x);\n")
    (tmp_path / "macros" / "double.sql").write_text("CREATE OR REPLACE MACRO double(x) AS 2 * x;\n")
    models = SqlModels(tmp_path)
    assert models.order == ["double", "twice"]  # derived from the reference, not from the names
    con = duckdb.connect()
    models.apply(con, models.order)
    assert con.execute("SELECT twice(4)").fetchone() == (8,)

    (tmp_path / "macros" / "other.sql").write_text("CREATE OR REPLACE MACRO not_other() AS 1;\n")
    with pytest.raises(ChatlakeError, match="must define exactly one object, other"):
        SqlModels(tmp_path)
    (tmp_path / "macros" / "other.sql").write_text("CREATE OR REPLACE MACRO other() AS loop();\n")
    (tmp_path / "macros" / "loop.sql").write_text("CREATE OR REPLACE MACRO loop() AS other();\n")
    with pytest.raises(ChatlakeError, match="cycle"):
        SqlModels(tmp_path)


def test_one_quoting_rule():
    assert sql_str("it's") == "it''s"
    con = duckdb.connect()
    values = ["a", "b'c"]
    assert con.execute(f"SELECT {sql_list(values)}").fetchone() == (values,)
