"""Benchmark: recall and look-alike survival of the redaction, per kind, on a labelled set of chat messages
generated from the documented formats, beside the peers people would use (scrubadub, detect-secrets) when
installed (``pip install -e '.[bench]'``).

    .venv/bin/python bench/bench_redaction.py [--per-format 3] [--seed 0]

The labelled set (``labelled_set``): chat sentences, each with one planted value and one look-alike that must
survive. The values are made here from the formats the providers and numbering plans document, not from
chatlake's rules (a format the rules get wrong shows as a miss):

* phone numbers: real numbers of 17 regions (libphonenumber's example number of each region and type, its
  last digits varied and kept where the library still calls them valid), each written in the ways people
  write them: international with spaces, dashes or dots, E.164, the 00 prefix, and the national forms of the
  default region (US): 22 formats in all;
* secrets: one documented format per rule of lake/redaction/secrets.yml (prefix, alphabet and length, in the
  sentence people paste it in); a rule without a format here stops the benchmark;
* IBANs (check digits computed), US SSNs beside their words, e-mail addresses, Luhn-valid card numbers, IPs;
* look-alikes: those of the tests (dates, versions, times, sums, hashes, UUIDs, ISBNs, library names,
  `token = tokenizer...`, a card number that fails Luhn, an IBAN with wrong check digits, an SSN without
  its words, publishable keys), one per message, drawn at random.

A planted value counts as removed when none of its pieces (the runs of 4+ letters and digits it is made of)
is left in the output; a look-alike survives when it is left verbatim. detect-secrets reports findings with
their values (``scan_line``; values of 6+ characters are replaced, shorter ones are its keyword matches);
scrubadub cleans the text (its default scrubber). Timings are per message, medians of 3 runs over the set
(chatlake's also over the set repeated to 20,000+ messages: one query's planning is most of a small batch).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import string
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import phonenumbers
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: python bench/bench_redaction.py

from lake.redaction import secret_rules  # noqa: E402
from lake.views import apply_feature_sql  # noqa: E402

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


# -- secrets: the documented format of each rule's provider, in the sentence it is pasted in --------------
# {a36}: 36 letters and digits, {h32}: 32 hex digits, {d10}: 10 digits, {b86}: 86 base64, {u20}: 20 URL-safe,
# {A16}: 16 capitals and digits. The secret is what is between << and >>.

SECRET_FORMATS = {
    "google_service_account_key": '{"type": "service_account", "private_key": "<<-----BEGIN PRIVATE KEY-----\\n{b64}\\n{b64}\\n-----END PRIVATE KEY-----\\n>>", "client_email": "bot@p.iam.gserviceaccount.com"}',
    "google_service_account_key_id": 'my key file has "private_key_id": "<<{h40}>>", is that safe?',
    "private_key": "here is my key:\n<<-----BEGIN RSA PRIVATE KEY-----\n{b64}\n{b64}\n-----END RSA PRIVATE KEY----->>\nwhy does ssh refuse it?",
    "github_classic_token": "git clone https://github.com/me/repo with token <<ghp_{a36}>> fails",
    "github_fine_grained_token": "GH_TOKEN=<<github_pat_{a22}_{a59}>> gh pr list",
    "github_oauth_token": "the app got <<gho_{a36}>> back from the callback",
    "github_app_token": "installation token <<ghs_{a36}>> expired after an hour",
    "github_refresh_token": "refresh_token <<ghr_{a76}>> is single use",
    "gitlab_personal_token": "curl --header 'PRIVATE-TOKEN: <<glpat-{u20}>>' https://gitlab.example.com/api/v4/projects",
    "gitlab_pipeline_trigger_token": "curl -X POST -F token=<<glptt-{h40}>> -F ref=main",
    "gitlab_deploy_token": "docker login -u gitlab+deploy-token-1 -p <<gldt-{u20}>>",
    "gitlab_runner_token": "gitlab-runner register --token <<glrt-{u20}>>",
    "gitlab_feed_token": "my calendar feed uses feed_token=<<glft-{u20}>>",
    "gitlab_other_token": "the oauth app secret is <<gloas-{h64}>>",
    "slack_bot_token": "SLACK_BOT_TOKEN=<<xoxb-{d11}-{d13}-{a24}>> in .env",
    "slack_user_token": "my user token <<xoxp-{d11}-{d11}-{d13}-{h32}>> works in curl",
    "slack_app_token": "socket mode wants <<xapp-1-A{A10}-{d13}-{h64}>>",
    "slack_webhook": "posting to https://hooks.slack.com/services/<<T{A8}/B{A10}/{a24}>> returns 404",
    "stripe_secret_key": 'stripe.api_key = "<<sk_live_{a99}>>"',
    "stripe_restricted_key": "restricted key <<rk_live_{a99}>> lacks a permission",
    "stripe_webhook_secret": "endpoint secret <<whsec_{a32}>> fails the signature check",
    "aws_access_key_id": "aws_access_key_id = <<AKIA{A16}>>",
    "aws_secret_access_key": "aws_secret_access_key = <<{b40}>>",
    "google_api_key": "https://maps.googleapis.com/maps/api/geocode/json?key=<<AIza{u35}>> says denied",
    "google_oauth_client_secret": '"client_secret": "<<GOCSPX-{u28}>>"',
    "google_oauth_access_token": "Authorization: OAuth <<ya29.{u150}>>",
    "azure_storage_account_key": "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=<<{b86}==>>;EndpointSuffix=core.windows.net",
    "azure_shared_access_key": "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=<<{b43}=>>",
    "azure_sas_token": "https://acme.blob.core.windows.net/c/f.csv?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-01-01T00:00:00Z&sig=<<{b43}%3D>>",
    "azure_client_secret": "AZURE_CLIENT_SECRET=<<{u3}8Q~{u34}>>",
    "anthropic_api_key": "ANTHROPIC_API_KEY=<<sk-ant-api03-{u93}AA>>",
    "openai_api_key": "client = OpenAI(api_key='<<sk-proj-{u156}>>')",
    "huggingface_token": "huggingface-cli login --token <<hf_{a34}>>",
    "npm_token": "//registry.npmjs.org/:_authToken=<<npm_{a36}>>",
    "pypi_token": "twine upload -u __token__ -p <<pypi-AgEIcHlwaS5vcmc{u70}>> dist/*",
    "twilio_api_key": "TWILIO_API_KEY=<<SK{h32}>>",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN=<<{h32}>>",
    "sendgrid_api_key": "SENDGRID_API_KEY=<<SG.{u22}.{u43}>>",
    "mailgun_api_key": "curl -s --user 'api:<<key-{l32}>>' https://api.mailgun.net/v3",
    "shopify_token": "X-Shopify-Access-Token: <<shpat_{h32}>>",
    "digitalocean_token": "doctl auth init -t <<dop_v1_{h64}>>",
    "databricks_token": "DATABRICKS_TOKEN=<<dapi{h32}>>",
    "discord_bot_token": 'client.run("<<MT{u24}.{u6}.{u38}>>")',
    "telegram_bot_token": 'bot = telebot.TeleBot("<<{d10}:AA{u33}>>")',
    "jwt": "Authorization: Bearer <<eyJ{u20}.eyJ{u60}.{u43}>>",
    "url_password": "DATABASE_URL=postgres://app:<<{a16}>>@db.internal:5432/prod",
    "bearer_token": "curl -H 'Authorization: Bearer <<{a40}>>' https://api.example.com",
    "password_assignment": "my config has password=<<{a12}!>> and it still fails",
    "credential_assignment": "settings.py: API_KEY = '<<{a32}>>'",
    "generic_secret_assignment": "webhook_secret: <<{a24}>>",
}
_FIELD = re.compile(r"\{([a-zA-Z])(\d+)\}|\{(b64)\}")
ALPHABETS = {"a": ALNUM, "h": HEX, "d": string.digits, "b": B64, "u": URLSAFE, "A": string.ascii_uppercase + string.digits,
             "l": string.ascii_lowercase + string.digits}


def _fill(rng: random.Random, template: str) -> tuple[str, str]:
    """The sentence and the planted secret of a format."""
    def field(m: re.Match) -> str:
        if m.group(3):
            return _r(rng, B64, 64)
        return _r(rng, ALPHABETS[m.group(1)], int(m.group(2)))

    text = _FIELD.sub(field, template)
    secret = text[text.index("<<") + 2:text.index(">>")]
    return text.replace("<<", "").replace(">>", ""), secret


# -- phones ------------------------------------------------------------------------------------------------

REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "CN", "RU", "MX", "IT", "ES", "NL", "ZA", "NG", "KR"]
PHONE_SENTENCES = ["call me at {} tonight", "my number is {}", "reach the office on {}, ask for Ana",
                   "Tel.: {}", "text {} when you land"]


def _number(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    """A valid number of ``region``: its example number with the last four digits varied."""
    kind = rng.choice([phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE])
    example = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    for _ in range(50):
        national = str(example.national_number)
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{rng.randrange(10_000):04d}")
        if phonenumbers.is_valid_number(candidate):
            return candidate
    return example


def _phone_formats(number: phonenumbers.PhoneNumber) -> dict[str, str]:
    fmt = phonenumbers.format_number
    international = fmt(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    forms = {
        "international": international,
        "e164": fmt(number, phonenumbers.PhoneNumberFormat.E164),
        "00-prefix": "00" + international[1:],
        "international-dashes": international.replace(" ", "-"),
    }
    if phonenumbers.region_code_for_number(number) == "US":
        national = fmt(number, phonenumbers.PhoneNumberFormat.NATIONAL)  # (415) 555-0132
        digits = str(number.national_number)
        forms.update({"us-national": national, "us-dashes": f"{digits[:3]}-{digits[3:6]}-{digits[6:]}",
                      "us-dots": f"{digits[:3]}.{digits[3:6]}.{digits[6:]}",
                      "us-1-dashes": f"1-{digits[:3]}-{digits[3:6]}-{digits[6:]}",
                      "us-plain": digits, "us-+1-parens": f"+1 ({digits[:3]}) {digits[3:6]}-{digits[6:]}"})
    elif phonenumbers.region_code_for_number(number) in ("DE", "GB", "FR"):
        forms["international-dots"] = international.replace(" ", ".")
    return forms


# -- the rest ----------------------------------------------------------------------------------------------

def _iban(rng: random.Random) -> str:
    country, bban = rng.choice([("DE", _r(rng, string.digits, 18)), ("GB", "WEST" + _r(rng, string.digits, 14)),
                                ("FR", _r(rng, string.digits, 21) + "M" + _r(rng, string.digits, 1)),
                                ("NL", "ABNA" + _r(rng, string.digits, 10)), ("ES", _r(rng, string.digits, 20))])
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    iban = f"{country}{98 - number % 97:02d}{bban}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.6 else iban


def _luhn(rng: random.Random, valid: bool = True) -> str:
    digits = [4] + rng.choices(range(10), k=14)
    total = sum((d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 0 else d for i, d in enumerate(reversed(digits)))
    check = (10 - total % 10) % 10
    digits.append(check if valid else (check + 1) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i:i + 4] for i in range(0, 16, 4))


def _others(rng: random.Random) -> list[tuple[str, str, str]]:
    """(kind, sentence, planted) of the kinds besides phones and secrets."""
    ssn = f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    email = f"{_r(rng, string.ascii_lowercase, 6)}.{_r(rng, string.ascii_lowercase, 5)}@{_r(rng, string.ascii_lowercase, 7)}.com"
    ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
    iban, card = _iban(rng), _luhn(rng)
    return [("iban", f"please wire it to {iban} by Friday", iban),
            ("ssn", f"the form asks for my SSN: {ssn}", ssn),
            ("email", f"send the draft to {email} please", email),
            ("credit_card", f"charge card {card}, exp 09/27", card),
            ("ip", f"the server at {ip} does not answer", ip)]


def lookalikes(rng: random.Random) -> list[str]:
    """Texts that resemble what is redacted and must survive (the tests' and their kin)."""
    return [f"on 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at 12:{rng.randint(10, 59)}:45",
            f"released {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2024",
            f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)} and 10.0.19041.{rng.randint(1, 999)}",
            "pi is 3.14159265", f"it costs {rng.randint(10, 99)} 000 000 dollars",
            f"commit {_r(rng, HEX, 40)}", f"uuid {_r(rng, HEX, 8)}-{_r(rng, HEX, 4)}-4{_r(rng, HEX, 3)}-a{_r(rng, HEX, 3)}-{_r(rng, HEX, 12)}",
            "ISBN 978-3-16-148410-0", "pip install scikit-learn (sk-learn)", "std::vector<int> at 12:30:45",
            "token = tokenizer.encode(text)", "max_tokens: 4096", "@decorator def f(): pass",
            f"card {_luhn(rng, valid=False)} is declined (fails the check)",
            "pay to DE89 3704 0044 0532 0130 02 (wrong check digits)", f"part {rng.randint(100, 899)}-45-6789 in stock",
            f"order {rng.randint(1_000_000, 9_999_999)} shipped", "risk-free-investment-strategies-are-nice",
            "publishable pk_live_51Hq8ZbK2mX7vN4rT9wYc1LpDs3 is public", "the bearer of bad news",
            "npm_config_registry and hf_hub_download", "a key-value store", "api_key = os.environ",
            f"coordinates 52.{rng.randint(1000, 9999)}, 13.{rng.randint(1000, 9999)}", "between 1999 and 2024",
            "the header eyJhbGciOiJIUzI1NiJ9", f"room 12, floor {rng.randint(2, 9)}"]


def labelled_set(per_format: int, seed: int) -> list[dict]:
    """Messages, each ``{kind, format, text, planted, lookalike}``."""
    rng = random.Random(seed)
    names = [rule["name"] for rule in secret_rules()]
    if set(names) != set(SECRET_FORMATS):
        raise SystemExit(f"formats and rules differ: {sorted(set(names) ^ set(SECRET_FORMATS))}")
    items = []
    for _ in range(per_format):
        for name in names:
            text, secret = _fill(rng, SECRET_FORMATS[name])
            items.append({"kind": "secret", "format": name, "text": text, "planted": secret})
        for region in REGIONS:
            for form, written in _phone_formats(_number(rng, region)).items():
                items.append({"kind": "phone", "format": f"{region} {form}",
                              "text": rng.choice(PHONE_SENTENCES).format(written), "planted": written})
        for kind, text, planted in _others(rng):
            items.append({"kind": kind, "format": kind, "text": text, "planted": planted})
    for item in items:
        look = rng.choice(lookalikes(rng))
        item["lookalike"] = look
        item["text"] = f"{item['text']}. Also, {look}." if rng.random() < 0.5 else f"{look}. {item['text']}"
    return items


# -- the cleaners ------------------------------------------------------------------------------------------


def chatlake_cleaner():
    con = duckdb.connect()
    apply_feature_sql(con)

    def clean(texts: list[str]) -> list[str]:
        con.register("batch", pa.table({"event_id": [f"{i:06d}" for i in range(len(texts))],
                                        "event_type": ["message"] * len(texts), "role": ["user"] * len(texts),
                                        "content": texts}))
        # into a DuckDB table first: a scan of a Python object holds the GIL, which the phone function needs too
        con.execute("CREATE OR REPLACE TABLE messages AS SELECT * FROM batch")
        return [r[0] for r in con.execute("SELECT clean_content FROM text_features_of('messages') ORDER BY event_id").fetchall()]

    return clean


def scrubadub_cleaner():
    try:
        import scrubadub
    except ImportError:
        return None
    scrubber = scrubadub.Scrubber()
    return lambda texts: [scrubber.clean(t) for t in texts]


def detect_secrets_cleaner():
    try:
        from detect_secrets.core.scan import scan_line
        from detect_secrets.settings import default_settings
    except ImportError:
        return None

    def clean(texts: list[str]) -> list[str]:
        out = []
        with default_settings():
            for text in texts:
                lines = []
                for line in text.split("\n"):
                    for value in sorted({s.secret_value or "" for s in scan_line(line)}, key=len, reverse=True):
                        if len(value) >= 6:
                            line = line.replace(value, "<SECRET>")
                    lines.append(line)
                out.append("\n".join(lines))
        return out

    return clean


_PIECE = re.compile(r"[A-Za-z0-9]{4,}")


def removed(planted: str, output: str) -> bool:
    pieces = _PIECE.findall(planted) or [planted]
    return not any(p in output for p in pieces)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-format", type=int, default=3, help="Messages per format (default 3).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    items = labelled_set(args.per_format, args.seed)
    texts = [item["text"] for item in items]
    formats = Counter((item["kind"], item["format"]) for item in items)
    kinds = Counter(item["kind"] for item in items)
    print(f"labelled set: {len(items)} messages, {len(formats)} formats "
          f"({sum(1 for k, _ in formats if k == 'phone')} phone formats in {len(REGIONS)} regions, "
          f"{sum(1 for k, _ in formats if k == 'secret')} secret rules); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start; phonenumbers {phonenumbers.__version__}")
    cleaners = {"chatlake": chatlake_cleaner(), "scrubadub": scrubadub_cleaner(), "detect-secrets": detect_secrets_cleaner()}
    results = {}
    for name, clean in cleaners.items():
        if clean is None:
            print(f"{name}: not installed (pip install -e '.[bench]')")
            continue
        times, outputs = [], None
        for _ in range(3):
            started = time.perf_counter()
            outputs = clean(texts)
            times.append(time.perf_counter() - started)
        results[name] = (outputs, statistics.median(times) / len(texts) * 1e6)
    # chatlake's cost on a few hundred messages is mostly the query's planning (its regexes compiled once per
    # query): per message it is measured on the set repeated to 20,000+ messages, in one query
    repeats = -(-20_000 // len(texts))
    times = []
    for _ in range(3):
        started = time.perf_counter()
        cleaners["chatlake"](texts * repeats)
        times.append(time.perf_counter() - started)
    bulk = statistics.median(times) / (len(texts) * repeats) * 1e6

    names = list(results)
    print(f"\n{'kind':14s} {'n':>5s}  " + "  ".join(f"{n + ' recall':>22s} {'survival':>9s}" for n in names))
    for kind in list(kinds) + ["all"]:
        chosen = [i for i, item in enumerate(items) if kind in ("all", item["kind"])]
        row = f"{kind:14s} {len(chosen):5d}  "
        for name in names:
            outputs = results[name][0]
            recall = sum(removed(items[i]["planted"], outputs[i]) for i in chosen) / len(chosen)
            survival = sum(items[i]["lookalike"] in outputs[i] for i in chosen) / len(chosen)
            row += f"  {recall:22.3f} {survival:9.3f}"
        print(row)
    print("\nper message (median of 3 runs over the set): "
          + ", ".join(f"{name} {results[name][1]:.0f} us" for name in names)
          + f"; chatlake over the set repeated to {len(texts) * repeats:,} messages in one query: {bulk:.0f} us")
    outputs = results["chatlake"][0]
    misses = defaultdict(list)
    for item, out in zip(items, outputs):
        if not removed(item["planted"], out):
            misses[item["format"]].append(item["planted"])
        if item["lookalike"] not in out:
            misses["look-alike lost"].append(item["lookalike"])
    print("chatlake misses: " + ("none" if not misses else "; ".join(f"{k}: {len(v)} (e.g. {v[0]!r})" for k, v in misses.items())))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
