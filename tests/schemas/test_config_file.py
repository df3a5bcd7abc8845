"""The commented config.yaml that `chatlake init` writes: generated from the pydantic models in schemas/config.py."""

from __future__ import annotations

import textwrap
from typing import Iterator

import yaml
from pydantic import BaseModel, Field

from schemas.config import Config, commented_yaml


def _fields(model: BaseModel, indent: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(indent, key, description) of every field of the model tree, in the order they are rendered."""
    for name, field in type(model).model_fields.items():
        yield indent, name, field.description
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _fields(value, indent + "  ")


def _section(indent: str, key: str) -> BaseModel | None:
    """The nested model at this depth named key (section names are unique in the tree)."""
    stack = [(Config(), "")]
    while stack:
        model, at = stack.pop()
        for name in type(model).model_fields:
            value = getattr(model, name)
            if at == indent and name == key:
                return value
            if isinstance(value, BaseModel):
                stack.append((value, at + "  "))
    return None


def _comment_above(lines: list[str], index: int, indent: str) -> str:
    """The text of the block of `# ` comment lines right above lines[index], joined with spaces."""
    block = []
    i = index - 1
    while i >= 0 and lines[i].startswith(indent + "# "):
        block.append(lines[i][len(indent) + 2:])
        i -= 1
    return " ".join(reversed(block))


def test_rendered_defaults_parse_back_to_the_defaults():
    text = Config().commented_yaml()
    assert yaml.safe_load(text) == Config().model_dump()
    assert commented_yaml() == text
    assert Config.model_validate(yaml.safe_load(text)) == Config()
    assert max(len(line) for line in text.splitlines()) <= 110


def test_every_field_has_its_description_right_above_its_key():
    lines = Config().commented_yaml().splitlines()
    pos = 0
    seen = 0
    for indent, key, description in _fields(Config()):
        while not (lines[pos].startswith(f"{indent}{key}:") and not lines[pos][len(indent)].isspace()):
            pos += 1  # an IndexError here: the key is missing (or out of order)
        comment = _comment_above(lines, pos, indent)
        if not description:  # a section without a description of its own: its class docstring heads it
            assert isinstance(section := _section(indent, key), BaseModel), f"{key} has no description"
            assert type(section).__doc__, f"{key}: neither a description nor a docstring"
            description = type(section).__doc__.strip().split("\n\n")[0]
        want = " ".join(description.replace("``", "`").split())
        assert comment.endswith(want), f"{key}: {comment!r} does not end with its description {want!r}"
        seen += 1
        pos += 1
    assert seen > 60  # the walk covered every section


def test_sections_are_headed_by_their_docstring():
    text = Config().commented_yaml()
    lines = text.splitlines()
    headed = 0
    for indent, key, _ in _fields(Config()):
        section = _section(indent, key)
        if isinstance(section, BaseModel):
            assert type(section).__doc__, f"section {key} has no docstring"
            paragraph = " ".join(type(section).__doc__.strip().split("\n\n")[0].replace("``", "`").split())
            comment = _comment_above(lines, lines.index(f"{indent}{key}:"), indent)
            assert comment.startswith(paragraph), key
            headed += 1
    assert headed >= 9  # lake, quality, dedup, snapshot (split), watch, registry (promotion, ollama)


def test_init_writes_it_and_it_loads_as_the_defaults(chatlake, home):
    r = chatlake("init")
    assert r.code == 0, r.err
    text = home.config_path.read_text()
    assert text == Config().commented_yaml()
    assert Config.load(home.config_path) == Config()
    assert "# Fold the single-write spool into the table after this many events." in text
    home.config_path.write_text("lake:\n  compact_min_files: 8\n")
    assert chatlake("init").code == 0  # an existing config is left alone
    assert home.config_path.read_text() == "lake:\n  compact_min_files: 8\n"


class _Inner(BaseModel):
    """An inner section.

    Only the first paragraph is the heading.
    """

    names: list[str] = Field(default_factory=lambda: ["a", "yes"], description="Names (a list).")
    limit: int | None = Field(None, description="A limit (None: none).")
    mapping: dict[str, str] = Field(default_factory=lambda: {"x/y": "1:2"})


class _Outer(BaseModel):
    """A small model."""

    title: str = Field("", description="A long description " + "word " * 30 + "end.")
    inner: _Inner = Field(default_factory=_Inner, description="The inner part.")
    on: bool = Field(True, description="A key YAML 1.1 would read as a boolean.")


def test_a_new_model_renders_by_itself():
    text = commented_yaml(_Outer(), width=60)
    assert text == textwrap.dedent("""\
        # A small model.

        # A long description word word word word word word word word
        # word word word word word word word word word word word
        # word word word word word word word word word word word
        # end.
        title: ''

        # An inner section.
        # The inner part.
        inner:
          # Names (a list).
          names:
          - a
          - 'yes'
          # A limit (None: none).
          limit: null
          mapping:
            x/y: '1:2'

        # A key YAML 1.1 would read as a boolean.
        'on': true
        """)
    assert yaml.safe_load(text) == _Outer().model_dump()
