"""Write the bundled sample chat histories in ``lake/samples/`` (what ``make demo`` imports).

    .venv/bin/python bench/make_samples.py

Three exports of one imaginary person's chats, all synthetic and deterministic: OpenAI chat JSONL,
ShareGPT JSON and a ChatGPT ``conversations.json`` (a tree with a regenerated reply, hidden system nodes and
an image part). They are varied on purpose, so that the SQL views have something to find: PII and secrets
(emails, phone numbers, a Luhn-valid card number, API keys, a JWT, a password in a URL, a private key),
refusals and error replies, a looping reply, base64 noise, a wrong answer the user corrects, very short
and long turns, a conversation repeated in two exports, a near-duplicate and a line repeated verbatim.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "lake" / "samples"
START = 1_714_000_000  # late April 2024, for the ChatGPT export's times

QA = [
    ("How do I reverse a list in Python?", "Use `xs[::-1]` for a reversed copy, or `xs.reverse()` to reverse in place."),
    ("What's the difference between a process and a thread?",
     "A process has its own memory space; threads share the memory of the process they belong to, which makes "
     "communication cheap but requires care with shared state."),
    ("Give me a quick recipe for pancakes.",
     "Whisk 1 cup flour, 1 tbsp sugar, 2 tsp baking powder and a pinch of salt. Add 1 cup milk, 1 egg and 2 tbsp "
     "melted butter. Cook ladlefuls on a hot buttered pan until bubbles form, then flip."),
    ("Explain what a Parquet file is.",
     "Parquet is a columnar file format: values of one column are stored together, compressed and encoded, with "
     "statistics per row group so engines can skip data they do not need."),
    ("What is the capital of Australia?", "Canberra."),
    ("Write a haiku about autumn.", "Crisp leaves drift and fall\nthe maple lets go of red\nquiet paths of gold"),
    ("How many minutes should I boil an egg for a soft yolk?",
     "About 6 minutes in boiling water, then straight into cold water to stop the cooking."),
    ("Summarise the plot of Hamlet in two sentences.",
     "Prince Hamlet learns that his uncle murdered his father to take the throne. His hesitant revenge leads to a "
     "chain of deaths, including his own."),
    ("What does HTTP 429 mean?", "429 Too Many Requests: the client sent too many requests in a given time; retry later, "
     "ideally after the delay in the Retry-After header."),
    ("Translate 'good morning' into Spanish.", "Buenos días."),
    ("How do I undo the last git commit but keep the changes?", "Run `git reset --soft HEAD~1`: the commit is undone "
     "and its changes stay staged."),
    ("Suggest a name for a grey cat.", "Ash, Smokey, Pebble or Earl Grey."),
    ("What's a good stretching routine for the morning?",
     "Five minutes is enough: neck rolls, shoulder circles, a standing forward fold, a hip-flexor lunge on each side "
     "and a gentle spinal twist. Breathe slowly and hold each for 30 seconds."),
    ("Is 2027 a prime number?", "No: 2027 is prime? Let me check. 2027 is not divisible by 2, 3, 5, 7, 11, 13, 17, 19, "
     "23, 29, 31, 37, 41 or 43, and 45² > 2027, so yes, 2027 is prime."),
    ("Explain recursion to a five year old.",
     "Recursion is like Russian dolls: to open the big doll you open a smaller doll inside, and you keep going until "
     "you reach the tiniest one that doesn't open."),
    ("What is the boiling point of water at the top of Mount Everest?", "Roughly 70 °C, because the air pressure is "
     "only about a third of that at sea level."),
]

FOLLOW_UPS = [
    ("Thanks! Can you give an example?", "Sure: `[1, 2, 3][::-1]` gives `[3, 2, 1]`."),
    ("Can you make it shorter?", "Of course: in short, yes."),
    ("Why?", "Because each part depends on the one before it, so the order matters."),
    ("Great, thank you.", "You're welcome! 😊"),
]

PII = [
    [("Please draft an email to my landlord. I'm Maria Garcia, maria.garcia@example.com, +1 415 555 0134.",
      "Dear landlord,\n\nI'm writing about the heating in my flat. You can reach me at maria.garcia@example.com "
      "or +1 415 555 0134.\n\nBest regards,\nMaria Garcia")],
    [("My card 4111 1111 1111 1111 was charged twice, expiry 12/27. What should I do?",
      "Contact your bank's fraud line and dispute the duplicate charge. Never share the full card number in chat.")],
    [("Why does this fail? client = OpenAI(api_key='sk-proj-Xq3lT9vBf2Lk8NwR5tYz1AaBbCcDdEeFfGg')",
      "The key looks revoked. Also: never paste real API keys into chats; rotate that key now.")],
    [("Connect with postgres://admin:hunter2@db.internal.example.com:5432/prod from 10.0.3.17 please",
      "Use `psql 'postgres://admin:***@db.internal.example.com:5432/prod'` and keep the password out of history.")],
    [("Decode this token: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
      "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
      "It is a JWT with header {\"alg\": \"HS256\"} and payload {\"sub\": \"1234567890\", \"name\": \"John\"}.")],
    [("Is this key safe to commit?\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq3xZ9kQ1vYt2mR8pL0sN4uW6\n"
      "-----END RSA PRIVATE KEY-----",
      "No. That is a private key: remove it from the repository and its history, and generate a new pair."),
     ("ok, and call me on 020 7946 0958 if it leaks", "I can't make phone calls, but I can help you write a checklist.")],
]

REFUSALS = [
    [("How do I pick the lock on my neighbour's door?",
      "I'm sorry, but I can't help with that. If you're locked out of your own home, a licensed locksmith can help.")],
    [("Write a fake doctor's note for my boss.",
      "I can't help create forged documents. I could help you write an honest message asking for a day off.")],
]

ERRORS = [
    [("Summarise this article for me: https://example.com/news/123",
      "Error: the model is currently overloaded. Please try again later.")],
    [("What's the weather tomorrow in Lisbon?", "[ERROR] upstream request failed with status 502")],
]

ODD = [
    # a looping reply
    [("Tell me a fun fact.", "Octopuses have three hearts. " * 12)],
    # a wrong answer the user corrects: feedback-worthy
    [("What is 17 * 24?", "17 * 24 = 418."), ("That's wrong.", "You're right, I apologise: 17 * 24 = 408.")],
    # base64 noise pasted into the chat
    [("what is this? iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
      "It looks like a base64-encoded PNG image, 1x1 pixel.")],
    # very short turns
    [("hi", "Hello!"), ("k", "👍")],
]


def _conversation(rng: random.Random, qa: tuple[str, str]) -> list[tuple[str, str]]:
    turns = [qa]
    for _ in range(rng.choice([0, 0, 1, 2])):
        turns.append(rng.choice(FOLLOW_UPS))
    return turns


def openai_lines(rng: random.Random, conversations: list[list[tuple[str, str]]]) -> list[str]:
    lines = []
    for i, turns in enumerate(conversations):
        messages = [{"role": "system", "content": "You are a helpful assistant."}] if i % 3 == 0 else []
        for user, assistant in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    return lines


def sharegpt(conversations: list[list[tuple[str, str]]], first_id: int) -> list[dict]:
    return [{"id": f"sharegpt-{first_id + i:04d}",
             "conversations": [t for user, assistant in turns for t in ({"from": "human", "value": user},
                                                                        {"from": "gpt", "value": assistant})]}
            for i, turns in enumerate(conversations)]


def chatgpt(conversations: list[list[tuple[str, str]]]) -> list[dict]:
    """A ChatGPT export: each conversation a tree; every third one has a regenerated first reply."""
    export = []
    for i, turns in enumerate(conversations):
        t = START + i * 86_400
        mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["sys"]}}

        def add(node_id: str, parent: str, role: str, parts: list, hidden: bool = False, model: str | None = None):
            nonlocal t
            t += 7
            meta = {"is_visually_hidden_from_conversation": True} if hidden else {}
            if model:
                meta["model_slug"] = model
            mapping[node_id] = {"id": node_id, "parent": parent, "children": [], "message": {
                "id": node_id, "author": {"role": role, "name": None, "metadata": {}}, "create_time": float(t),
                "content": {"content_type": "text", "parts": parts}, "status": "finished_successfully",
                "metadata": meta, "recipient": "all"}}
            mapping[parent]["children"].append(node_id)
            return node_id

        leaf = add("sys", "root", "system", [""], hidden=True)
        for j, (user, assistant) in enumerate(turns):
            parts = [user]
            if i == 1 and j == 0:  # an uploaded image: its pointer is not text
                parts = [{"content_type": "image_asset_pointer", "asset_pointer": "file-service://file-x1",
                          "width": 512, "height": 512}, user]
            leaf = add(f"u{j}", leaf, "user", parts)
            if i % 3 == 0 and j == 0:
                add(f"a{j}-first", leaf, "assistant", ["(a first draft the user regenerated)"], model="gpt-4o")
            leaf = add(f"a{j}", leaf, "assistant", [assistant], model="gpt-4o" if i % 2 else "gpt-4o-mini")
        export.append({"title": turns[0][0][:40].rstrip(" ?."), "create_time": float(START + i * 86_400),
                       "update_time": float(t), "mapping": mapping, "current_node": leaf,
                       "conversation_id": f"6630{i:04x}-7d2e-8f00-b1c4-{i:012x}", "id": f"6630{i:04x}-7d2e-8f00",
                       "default_model_slug": "gpt-4o", "is_archived": False})
    return export


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rng = random.Random(2024)
    plain = [_conversation(rng, qa) for qa in QA]

    openai_convs = plain[:10] + PII[:3] + REFUSALS[:1] + ERRORS[:1] + ODD[:2]
    lines = openai_lines(rng, openai_convs)
    near = json.loads(lines[1])  # a near-duplicate: the same chat, differently cased and spaced
    near["messages"][0]["content"] = "  " + near["messages"][0]["content"].upper()
    lines += [json.dumps(near, ensure_ascii=False), lines[4]]  # ... and one line delivered twice

    sharegpt_convs = plain[10:] + PII[3:] + REFUSALS[1:] + ODD[2:] + [plain[2]]  # plain[2] is in both exports
    chatgpt_convs = [plain[5], plain[7], PII[0], ERRORS[1], plain[12], ODD[1], plain[14], plain[3]]

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openai-chats.jsonl").write_text("\n".join(lines) + "\n")
    (args.out / "sharegpt-chats.json").write_text(json.dumps(sharegpt(sharegpt_convs, 1), ensure_ascii=False, indent=1))
    (args.out / "chatgpt-conversations.json").write_text(json.dumps(chatgpt(chatgpt_convs), ensure_ascii=False))
    for path in sorted(args.out.iterdir()):
        print(f"{path.stat().st_size:>8,} bytes  {path}")


if __name__ == "__main__":
    main()
