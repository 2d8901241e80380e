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


# Values that are secrets whatever their option is called.
_SECRET_VALUE = re.compile(
    r"^(hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
    r"sk-[A-Za-z0-9_-]{16,}|xox[abpors]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|"
    r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*|glpat-[A-Za-z0-9_-]{16,})$"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_OPTION = re.compile(r"^(?P<dashes>--?)(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<eq>=)?(?P<value>.*)$")
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def _clean_value(value: str) -> str:
    if _SECRET_VALUE.match(value):
        return REDACTED
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)


def redact_argv(argv: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """argv with secret values replaced by <redacted>, long arguments cut, count capped."""
    result: list[str] = []
    hide_next = False
    for raw in argv[:MAX_ARGS]:
        arg = raw if len(raw) <= MAX_ARG_CHARS else raw[:MAX_ARG_CHARS] + "..."
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
                result.append(arg)
                hide_next = True
            continue
        assignment = _ASSIGNMENT.match(arg)
        if assignment and is_secret_name(assignment["name"]):
            result.append(f"{assignment['name']}={REDACTED}")
            continue
        result.append(_clean_value(arg))
    if len(argv) > MAX_ARGS:
        result.append(f"... ({len(argv) - MAX_ARGS} more arguments)")
    return tuple(result)


def redact_value(name: str, value: str) -> str:
    """An allowlisted environment value, cleaned the same way."""
    if is_secret_name(name):
        return REDACTED
    cut = value if len(value) <= MAX_ARG_CHARS else value[:MAX_ARG_CHARS] + "..."
    return _clean_value(cut)
