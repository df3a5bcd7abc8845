"""`--help` and the README's command blocks agree with the real command tree of `cli.app`.

Every command and group answers `--help` through the real entry point; every command's help carries an
`Example: chatlake ...` that names that same command and parses; every `chatlake ...` line of the README's
sh blocks names a real command with options it has, and every top-level command appears in one of them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

import cli

ROOT = typer.main.get_command(cli.app)
README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}
# typer builds click commands (its own vendored copy of click in recent releases): duck-typed here, a group
# is a command with subcommands.


def _is_group(command) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _walk(group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield path + (name,), command
        if _is_group(command):
            yield from _walk(command, path + (name,))


COMMANDS = {(): ROOT, **dict(_walk(ROOT))}
LEAVES = [path for path, command in COMMANDS.items() if not _is_group(command)]
GROUPS = [path for path, command in COMMANDS.items() if _is_group(command)]


def _option_names(command) -> dict:
    names = {"--help": None}
    for param in command.params:
        if param.param_type_name == "option":
            names.update({opt: param for opt in (*param.opts, *param.secondary_opts)})
    return names


def _words(line: str) -> list[str]:
    """The arguments after `chatlake` of a shell line (comments, brackets of optional parts, redirections off)."""
    tokens = [t.strip("[]") for t in shlex.split(line, comments=True)]
    for i, token in enumerate(tokens):
        if token in SHELL_OPERATORS:
            tokens = tokens[:i]
            break
    assert tokens and tokens[0] == "chatlake", line
    return [t for t in tokens[1:] if t]


def _resolve(args: list[str]) -> tuple[tuple[str, ...], object, list[str]]:
    """Global options, then command words: (the command's path, the command, the arguments left to it)."""
    i = 0
    global_options = _option_names(ROOT)
    while i < len(args) and args[i].startswith("-"):
        name, eq, _ = args[i].partition("=")
        assert name in global_options, f"{name} is not a global option of chatlake"
        param = global_options[name]
        i += 1 if eq or param is None or param.is_flag else 2
    path: tuple[str, ...] = ()
    command = ROOT
    while _is_group(command):
        assert i < len(args), f"chatlake {' '.join(path)}: no subcommand given"
        assert args[i] in command.commands, \
            f"chatlake {' '.join(path)}: no command {args[i]!r} (there are: {', '.join(command.commands)})"
        command = command.commands[args[i]]
        path += (args[i],)
        i += 1
    return path, command, args[i:]


def _check(line: str) -> tuple[str, ...]:
    """Assert a `chatlake ...` line names a real command, uses only its options and parses; return its path."""
    path, command, rest = _resolve(_words(line))
    own = _option_names(command)
    for token in rest:
        if token.startswith("-") and token != "-" and not re.fullmatch(r"-\d+(\.\d+)?", token):
            name = token.partition("=")[0]
            assert name in own, f"{line!r}: chatlake {' '.join(path)} has no option {name} (it has: {', '.join(own)})"
    try:  # the parser's own check: argument counts, required options, value types
        command.make_context("chatlake " + " ".join(path), list(rest))
    except Exception as exc:  # click's usage errors
        if not hasattr(exc, "format_message"):
            raise
        pytest.fail(f"{line!r}: {exc.format_message()}")
    return path


def _help(capsys, path: tuple[str, ...]) -> str:
    capsys.readouterr()
    code = cli.main([*path, "--help"])
    out = capsys.readouterr().out
    assert code == 0, f"chatlake {' '.join(path)} --help exited {code}"
    assert out.startswith("Usage: chatlake " + " ".join(path)), out[:200]
    return out


def test_the_tree_is_walked():
    assert {"init", "ingest", "sql", "train", "eval", "promote", "watch"} <= {p[0] for p in LEAVES}
    assert {("snapshot",), ("models",), ("alias",)} <= set(GROUPS)
    assert ("snapshot", "create") in LEAVES


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: " ".join(p) or "chatlake")
def test_group_help(capsys, path):
    out = _help(capsys, path)
    for name in COMMANDS[path].commands:
        assert re.search(rf"^  {re.escape(name)}\b", out, re.M), f"{name} is not listed in the help of {path}"


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_command_help_has_an_example_of_itself(capsys, path):
    out = _help(capsys, path)
    lines = out.splitlines()
    examples = []
    for i, line in enumerate(lines):  # click rewraps a paragraph: an example runs until the blank line
        if line.strip().startswith("Example:"):
            paragraph = [line.strip().removeprefix("Example:")]
            for following in lines[i + 1:]:
                if not following.strip():
                    break
                paragraph.append(following.strip())
            examples.append(" ".join(paragraph).strip())
    assert examples, f"chatlake {' '.join(path)} --help has no 'Example: chatlake ...' line"
    for example in examples:
        assert example.startswith("chatlake "), example
        assert _check(example) == path, f"the example of chatlake {' '.join(path)} runs another command: {example}"


def _readme_command_lines() -> list[str]:
    lines, in_sh = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_sh = line.strip() in ("```sh", "```bash", "```shell", "```console") and not in_sh
            continue
        stripped = line.strip().removeprefix("$ ")
        if not in_sh:
            continue
        if stripped.startswith("chatlake ") or stripped == "chatlake":
            lines.append(stripped)
        elif re.match(r"torchrun\b.* -m cli\b", stripped):  # the same CLI under torchrun
            lines.append("chatlake" + stripped.split(" -m cli", 1)[1])
    return lines


README_LINES = _readme_command_lines()


def test_readme_has_command_blocks():
    assert len(README_LINES) > 20


@pytest.mark.parametrize("line", README_LINES)
def test_readme_command_is_real(line):
    _check(line)


def test_readme_shows_every_top_level_command():
    shown = {_resolve(_words(line))[0][0] for line in README_LINES}
    missing = sorted(set(ROOT.commands) - shown)
    assert not missing, f"README.md's command blocks never show: {', '.join(missing)}"


def _tour() -> list[str]:
    """The command lines of the README's tour (the first sh block under "A tour of the commands"), in order."""
    text = README.read_text().split("## A tour of the commands", 1)[1]
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.join(shlex.split(line, comments=True)) for line in block.splitlines() if line.startswith("chatlake")]


def test_the_tour_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every line of the tour, exactly as written, in order, in a folder holding the two files it imports
    (made from the samples the repository ships: a ChatGPT export and gzipped OpenAI JSONL), with the default
    home ./.chatlake; the interactive `chatlake sql` gets an empty stdin (Ctrl-D at once).

    The other sh blocks are checked against the command tree (test_readme_command_is_real) but not run: they
    need what a test here cannot have offline in seconds: a base model to train on (train, eval, torchrun), an
    Ollama server (promote, rollback, deployments of a real deployment, export of a trained version), a
    long-running server or watcher (proxy, watch), snapshots numbered 2 and 3 and a tokenizer folder
    (the snapshot block's ids and --tokenizer ./my-model)."""
    import gzip
    import io
    import shutil

    samples = README.parent / "lake" / "samples"
    shutil.copy(samples / "chatgpt-conversations.json", tmp_path / "conversations.json")
    (tmp_path / "chats.jsonl.gz").write_bytes(gzip.compress((samples / "openai-chats.jsonl").read_bytes()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHATLAKE_HOME", raising=False)
    lines = _tour()
    assert lines[0] == "chatlake init" and len(lines) >= 12  # (comments off, quoting kept)
    outputs = {}
    for line in lines:
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        capsys.readouterr()
        code = cli.main(shlex.split(line)[1:])
        captured = capsys.readouterr()
        assert code == 0, f"{line!r} exited {code}: {captured.err}"
        outputs[line] = captured.out
    assert (tmp_path / ".chatlake" / "config.yaml").exists()
    forgot = next(out for line, out in outputs.items() if line.startswith("chatlake forget"))
    assert forgot.startswith("forgot 1 conversation(s)")  # alice's, logged by the tour's log line
    assert '"title": "chatlake event"' in outputs["chatlake schema"]


@pytest.mark.parametrize("path", LEAVES + GROUPS, ids=lambda p: " ".join(p) or "chatlake")
def test_the_quick_help_is_the_parsers_own(capsys, path):
    """`cli.main` prints a command's help from the tree without parsing the line (typer's coercion would
    import pydantic first): the text must be exactly what typer prints, wherever --home and --help are."""
    import contextlib

    capsys.readouterr()
    assert cli._help_only(["--home", "/nowhere", *path, "--help"])
    quick = capsys.readouterr().out
    with contextlib.suppress(SystemExit):
        cli.app(args=[*path, "--help"], prog_name="chatlake")
    assert quick == capsys.readouterr().out
    assert not cli._help_only([*path, "--", "--help"]) and not cli._help_only(["nosuch", "--help"])
