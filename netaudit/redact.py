"""Keep secrets out of inventories, reports and logs.

Command lines are copied into reports that travel to admins, cron mail and monitoring, and
users do pass tokens as arguments (``--hf-token=...``, ``WANDB_API_KEY=... python train.py``,
``https://user:pass@host``). We redact by the argument's name and by the shape of well-known
token formats; we would rather hide a harmless value than leak a real one.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
MAX_ARG_CHARS = 512
MAX_ARGS = 256

# A name is secret when one of its words (split at - _ .) is one of these: --hf-token,
# WANDB_API_KEY, --db.password. Whole words, so --tokenizer and --max-tokens stay readable.
_SECRET_WORDS = frozenset(
    {
        "apikey", "auth", "authorization", "cookie", "credential", "credentials", "key",
        "pass", "passphrase", "passwd", "password", "pat", "private", "pwd", "secret",
        "signature", "token",
    }
)  # fmt: skip
_WORD_SPLIT = re.compile(r"[-_.]+")


def is_secret_name(name: str) -> bool:
    return any(word in _SECRET_WORDS for word in _WORD_SPLIT.split(name.lower()))


# Token shapes that are secrets whatever their option is called, found anywhere in an
# argument: alone, inside `-c` code, in a JSON blob or a header.
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_])(hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
    r"sk-[A-Za-z0-9_-]{16,}|xox[abpors]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|"
    r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*|glpat-[A-Za-z0-9_-]{16,})"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
# "Authorization: Bearer <token>", "-H 'Authorization: Basic ...'"
_AUTH_SCHEME = re.compile(
    r"(?i)\b(?P<scheme>bearer|basic|token)(?P<gap>\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})"
)
# name=value, name: value, "name": "value", os.environ['NAME']='value' inside a longer text
_KEYED = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>[\"'\]]*\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&}\])]+)"
)
_OPTION = re.compile(r"^(?P<dashes>--?)(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<eq>=)?(?P<value>.*)$", re.S)
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.S)


def _keyed(match: re.Match[str]) -> str:
    value = match["value"]
    if (
        not is_secret_name(match["name"])
        or value == REDACTED
        or value.lower() in ("bearer", "basic", "token")
    ):
        return match[0]
    return f"{match['name']}{match['sep']}{REDACTED}"


def _clean_text(value: str) -> str:
    value = _TOKEN.sub(REDACTED, value)
    value = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
    value = _AUTH_SCHEME.sub(lambda m: f"{m['scheme']}{m['gap']}{REDACTED}", value)
    return _KEYED.sub(_keyed, value)


def _cut(text: str) -> str:
    """Cut only after cleaning: a secret that straddles the cut must not leave its head."""
    return text if len(text) <= MAX_ARG_CHARS else text[:MAX_ARG_CHARS] + "..."


def redact_argv(argv: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """argv with secret values replaced by <redacted>, long arguments cut, count capped."""
    result: list[str] = []
    hide_next = False
    for arg in argv[:MAX_ARGS]:
        if hide_next:
            hide_next = False
            if not arg.startswith("-"):
                result.append(REDACTED)
                continue
        option = _OPTION.match(arg)
        if option and is_secret_name(option["name"]):
            if option["eq"]:
                result.append(f"{option['dashes']}{option['name']}={REDACTED}")
            else:
                result.append(_cut(arg))
                hide_next = True
            continue
        assignment = _ASSIGNMENT.match(arg)
        if assignment and is_secret_name(assignment["name"]):
            result.append(f"{assignment['name']}={REDACTED}")
            continue
        result.append(_cut(_clean_text(arg)))
    if len(argv) > MAX_ARGS:
        result.append(f"... ({len(argv) - MAX_ARGS} more arguments)")
    return tuple(result)


def redact_value(name: str, value: str) -> str:
    """An allowlisted environment value, cleaned the same way."""
    if is_secret_name(name):
        return REDACTED
    return _cut(_clean_text(value))
