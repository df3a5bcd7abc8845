"""What the redaction SQL needs beyond its macro files: the table of secret rules, and phone validation.

Secrets. The rules are data, in ``secrets.yml`` beside this file (its header documents the columns), because
a rule is a fact about a provider's token format, not code: adding one is adding a row with its example and
its look-alike, which the tests take from the same row. ``secret_models()`` turns the table into three
macros that join the SQL models of ``lake/sql/`` (``lake.views.MODELS``) as if they had files of their own,
so the order, the closure of what computes the features and the cache fingerprint cover them like any
other macro; editing the table changes the fingerprint and recomputes the cache:

* ``re_secret_hint()``: every rule's keywords in one alternation. It is part of ``re_work()``, the one DFA
  scan every message gets: a message holding no keyword never reaches a secret rule;
* ``redact_secrets(t)``: each rule whose keyword ``t`` holds (one regex extraction finds the keywords; a
  constant map gives their rules), applied in the table's order, each as a ``regexp_replace`` with a
  constant pattern (compiled once per query, not per row). A ``contains`` per rule in a lambda was 3x
  dearer: a lambda copies the text it reads for every element of the list it walks. A rule's match is ``(before)(pattern)(after)``: the context groups are kept and the secret becomes
  a tag naming the rule followed by the placeholder. Rules with ``min_entropy`` extract their values first
  and replace only those whose Shannon entropy (``entropy()``) reaches it;
* ``secret_rule_names()``: the rule names in order, for the stats view (every rule, also at zero).

The tag is the rule's name between two private-use characters (U+E000, U+E001), which no later rule's
pattern matches: ``message_features_of`` reads the names from the tags (``redaction_rules``, which rule fired,
without the secret) and then removes them, so the text keeps only the placeholder.

Phones. Which digit runs are phone numbers is libphonenumber's knowledge (``phonenumbers`` is its port), not a
pattern's: the SQL extracts candidates (digits with the separators numbers are written with, at least 7
digits) from the few messages whose digits hint matches, and ``phone_numbers(candidates)``, a Python
function registered on the connection (``register``), returns the ones the library validates, as Arrow
arrays, one call per vector of rows. A parse costs 0.1-0.2 ms, so a candidate whose digit count no number
of the region has is turned down before it. A candidate that is not a number as a whole (two numbers side by side,
a number run into the next figure) is searched for its longest valid stretches of space-separated groups.
The default region (``redaction.phone_region`` in the config) reads national numbers; a number written with
``+`` (or ``00``, the international prefix of most of the world) is read in any region. The region and the
library's version are part of the cache fingerprint (``fingerprint_parts``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import duckdb
import phonenumbers
import pyarrow as pa
import yaml

from lake.sqlmodels import sql_str
from schemas.errors import BadInput

RULES_FILE = Path(__file__).with_name("secrets.yml")
DEFAULT_PLACEHOLDER = "<SECRET>"
_FIELDS = {"name", "keywords", "before", "pattern", "after", "placeholder", "min_entropy", "example", "lookalike"}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# The tag a rule's match leaves before its placeholder, until message_features_of reads and removes it.
TAG_OPEN, TAG_CLOSE = "\ue000", "\ue001"
# The most space-separated groups a candidate is searched through for numbers (a table of figures is not).
MAX_GROUPS = 12


@cache
def secret_rules(path: Path = RULES_FILE) -> tuple[dict, ...]:
    """The rules of ``path``, checked: a mistake in the table is one line naming the rule."""
    try:
        rules = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(rules, list) or not rules:
        raise BadInput(f"{path}: expected a list of rules")
    seen = set()
    for no, rule in enumerate(rules, 1):
        where = f"{path}: rule {no} ({rule.get('name', '?') if isinstance(rule, dict) else '?'})"
        if not isinstance(rule, dict) or not {"name", "keywords", "pattern"} <= set(rule) or set(rule) - _FIELDS:
            raise BadInput(f"{where}: needs name, keywords and pattern, and only {', '.join(sorted(_FIELDS))}")
        if not _NAME.fullmatch(str(rule["name"])) or rule["name"] in seen:
            raise BadInput(f"{where}: the name must be lower_snake_case and unique")
        seen.add(rule["name"])
        if not isinstance(rule["keywords"], list) or not all(isinstance(k, str) and k for k in rule["keywords"]) \
                or not rule["keywords"]:
            raise BadInput(f"{where}: keywords must be a non-empty list of strings")
        if not isinstance(rule.get("min_entropy", 0), (int, float)) \
                or not re.fullmatch(r"<[A-Z_]+>", str(rule.get("placeholder", DEFAULT_PLACEHOLDER))):
            raise BadInput(f"{where}: min_entropy must be a number and a placeholder like <SECRET>")
        for part in ("before", "pattern", "after"):
            try:
                groups = re.compile(python_regex(str(rule.get(part, "")))).groups
            except re.error as exc:
                raise BadInput(f"{where}: {part} is not a valid pattern ({exc})") from None
            if groups:
                raise BadInput(f"{where}: {part} must have no capturing groups (use (?:...))")
    return tuple(rules)


def python_regex(pattern: str) -> str:
    """An RE2 pattern as Python's ``re`` spells it (``\\x{E000}`` is ``\\U0000e000`` there)."""
    return re.sub(r"\\x\{([0-9a-fA-F]+)\}", lambda m: "\\U%08x" % int(m.group(1), 16), pattern)


def rule_regex(rule: dict) -> str:
    """A rule's whole match: ``(before)(pattern)(after)``."""
    return f"({rule.get('before', '')})({rule['pattern']})({rule.get('after', '')})"


def _lit(text: str) -> str:
    return "'" + sql_str(text) + "'"


def _escape(keyword: str) -> str:
    """A literal keyword as an RE2 pattern."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", keyword)


def secret_models(rules: tuple[dict, ...] | None = None) -> dict[str, str]:
    """The SQL of the macros made from the rules table (``rules``: those of ``secrets.yml``; see the module
    docstring), by name."""
    rules = secret_rules() if rules is None else rules
    every = {k for rule in rules for k in rule["keywords"]}
    # the scan every message gets needs no keyword that holds another; the extraction that picks the rules
    # needs them all, longest first (the alternation takes the first that matches at a position), and a
    # keyword found stands for the keywords it holds too
    hint = "|".join(_escape(k) for k in sorted(k for k in every if not any(o != k and o in k for o in every)))
    found = "|".join(_escape(k) for k in sorted(every, key=lambda k: (-len(k), k)))
    rules_of = {k: sorted(no for no, rule in enumerate(rules, 1) if any(kw in k for kw in rule["keywords"]))
                for k in sorted(every)}
    steps = []
    for no, rule in enumerate(rules, 1):
        tag = (f"chr({ord(TAG_OPEN)}) || {_lit(rule['name'])} || chr({ord(TAG_CLOSE)}) || "
               f"{_lit(rule.get('placeholder', DEFAULT_PLACEHOLDER))}")
        pattern = _lit(rule_regex(rule))
        if "min_entropy" in rule:
            steps.append(f"WHEN {no} THEN replace_each(acc, list_filter(regexp_extract_all(acc, {pattern}, 2), "
                         f"lambda v: entropy(v) >= {float(rule['min_entropy'])}), {tag})")
        else:
            steps.append(f"WHEN {no} THEN regexp_replace(acc, {pattern}, '\\1' || {tag} || '\\3', 'g')")
    keyword_map = "MAP {" + ", ".join(f"{_lit(k)}: {nos}" for k, nos in rules_of.items()) + "}"
    header = "-- generated by lake/redaction from secrets.yml (see its docstring)\n"
    indent = "\n" + " " * 12
    return {
        "re_secret_hint": f"{header}CREATE OR REPLACE MACRO re_secret_hint() AS {_lit(hint)};",
        "redact_secrets": (
            f"{header}CREATE OR REPLACE MACRO redact_secrets(t) AS list_reduce(\n"
            f"    list_sort(list_distinct(flatten(list_transform(regexp_extract_all(t, {_lit(found)}),\n"
            f"                                                   lambda k: {keyword_map}[k])))),\n"
            f"    lambda acc, i: CASE i{indent}" + indent.join(steps) + " END,\n    t);"),
        "secret_rule_names": (f"{header}CREATE OR REPLACE MACRO secret_rule_names() AS "
                              f"[{', '.join(_lit(rule['name']) for rule in rules)}];"),
    }


# -- phones -----------------------------------------------------------------------------------------------


def check_region(region: str) -> str:
    """``region`` if libphonenumber knows it (a two-letter code such as US, DE, IN), else a one-line error."""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise BadInput(f"redaction.phone_region: {region!r} is not a region phonenumbers knows (two letters, e.g. US, DE)")
    return region


@cache
def _national_lengths(region: str) -> tuple[frozenset[int], re.Pattern]:
    """How many digits a national number of ``region`` can have (with its trunk prefix or without), and its
    international dialling prefix (011 in the US): what a candidate must fit before the library parses it."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    lengths = set(metadata.general_desc.possible_length)
    trunk = len(metadata.national_prefix or "")
    return frozenset(lengths | {n + trunk for n in lengths}), re.compile(metadata.international_prefix or "$^")


def _valid(text: str, region: str) -> bool:
    """Whether ``text`` is a valid phone number (read in ``region`` unless it has a + or 00 prefix); the digit
    count is checked before the parse, which most candidates (sums, dates, invalid cards) then never reach."""
    number = text.strip()
    digits = re.sub(r"\D", "", number)
    if number.startswith("00"):  # the international prefix of most regions, whatever the default region
        number = "+" + number[2:].lstrip()
    if number.lstrip("(").startswith("+"):
        if not 7 <= len(digits) <= 17:
            return False
    else:
        lengths, international = _national_lengths(region)
        if len(digits) not in lengths and not international.match(digits):
            return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, region))
    except phonenumbers.NumberParseException:
        return False


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


def numbers_in(candidate: str, region: str) -> list[str]:
    """The phone numbers in ``candidate`` (a run of digits and separators): the whole of it if it is one,
    else its longest valid stretches of space-separated groups, left to right."""
    if _valid(candidate, region):
        return [candidate]
    groups = candidate.split(" ")
    if len(groups) == 1 or len(groups) > MAX_GROUPS:
        return []
    found, i = [], 0
    while i < len(groups):
        end = next((j for j in range(len(groups), i, -1)
                    if (i, j) != (0, len(groups))  # the whole was tried above
                    and 7 <= _digits(" ".join(groups[i:j])) <= 17 and _valid(" ".join(groups[i:j]), region)), None)
        if end is None:
            i += 1
        else:
            found.append(" ".join(groups[i:end]))
            i = end
    return found


def register(con: duckdb.DuckDBPyConnection, region: str = "US") -> None:
    """Define ``phone_numbers(VARCHAR[]) -> VARCHAR[]`` on ``con``: for each row's candidates, the phone
    numbers in them (``numbers_in``), read with ``region`` as the default region. It must exist before the
    macros that call it are created (DuckDB binds a macro when it is created)."""
    check_region(region)

    def phone_numbers(candidates: pa.ChunkedArray) -> pa.Array:
        lists = candidates.combine_chunks() if isinstance(candidates, pa.ChunkedArray) else candidates
        found = [None if row is None else [n for c in row for n in numbers_in(c, region)] for row in lists.to_pylist()]
        return pa.array(found, pa.list_(pa.string()))

    try:
        con.remove_function("phone_numbers")
    except duckdb.InvalidInputException:
        pass
    con.create_function("phone_numbers", phone_numbers, [duckdb.list_type("VARCHAR")], duckdb.list_type("VARCHAR"),
                        type="arrow", side_effects=False)


def fingerprint_parts(region: str) -> bytes:
    """What the cleaning depends on besides its SQL: the phone library's version (its metadata) and the
    default region."""
    return f"phonenumbers {phonenumbers.__version__} region {region}".encode()
