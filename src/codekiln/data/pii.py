"""Redact PII (emails, public IP addresses, secrets) from source files before training.

Speed matters (hundreds of thousands of files), so every detector starts from something `re` or
`str.find` can locate in C (a literal `@`, `.`, `:`, a keyword, a token prefix) and only then
runs the full pattern or the `ipaddress` check. Replacements are deterministic: a value's
placeholder is picked from a small fixed set by a stable hash (blake2b) of the value, so one
value maps to one placeholder in every file and process. Placeholders contain no quotes,
backslashes or newlines, and the detectors leave placeholders alone: redact(redact(x)) ==
redact(x).

Deliberate limits: assigned secrets are taken only from quoted literals without escapes;
private key blocks must be complete (BEGIN ... END) and hold only PEM characters (a key split
over concatenated literals is missed); a 4-part version with no version-ish context before it
(`["1.2.3.4"]`) reads as an IP and is redacted; the git SSH user (`git@github.com:o/r`) is not a
person; values containing "example", "your_", "changeme" and the like count as placeholders.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Iterable

PII_KINDS = ("email", "ip", "secret")

EMAIL_PLACEHOLDERS = (
    "ada@example.com", "grace@example.org", "alan@example.net", "linus@example.com",
)
IPV4_PLACEHOLDERS = ("10.11.12.13", "172.16.31.7", "192.168.42.17", "10.200.3.41")
IPV6_PLACEHOLDERS = ("fd00:1a2b::17", "fd00:c0de::42", "fd12:3456:789a::1", "fdab:cd00::99")
# Letter first: a token replaced outside a string literal (`sk-...` in code) stays an identifier.
SECRET_PLACEHOLDERS = (
    "M0XvqZjxTW3xvboSRt5Mh3dAwVtRMflh",
    "bmuaptt0Azn0DNRUQxA71p2Td8VKqxry",
    "o1nIj7BRd03Q2ybv097SHzxgQA6TCvY4",
    "dhKMlRdZQ9QsTXUuSnH6av1Ib8pp1xxX",
)
PRIVATE_KEY_PLACEHOLDER = "<PRIVATE_KEY>"

_SECRET_SET = frozenset(SECRET_PLACEHOLDERS)
_EMAIL_SET = frozenset(EMAIL_PLACEHOLDERS)
_DIGITS = frozenset("0123456789")


def _pick(value: str, options: tuple[str, ...]) -> str:
    # blake2b, not hash(): hash() is salted per process and would break determinism.
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return options[int.from_bytes(digest, "big") % len(options)]


def _splice(
    text: str, spans: Iterable[tuple[int, int]], repl: Callable[[str], str]
) -> tuple[str, int]:
    """Replace each span's text by repl(span text); overlapping spans: the first wins."""
    out, pos, n = [], 0, 0
    for start, end in sorted(spans):
        if start >= pos:
            out += (text[pos:start], repl(text[start:end]))
            pos, n = end, n + 1
    if not n:
        return text, 0
    out.append(text[pos:])
    return "".join(out), n


# ---------------------------------------------------------------- email
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_DOMAIN_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w@-]|\.[A-Za-z0-9])"
)


def _email_placeholder(value: str) -> str:
    return _pick(value, EMAIL_PLACEHOLDERS)


def _email_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    at = text.find("@")
    while at != -1:
        m = _DOMAIN_RE.match(text, at + 1)
        if m:
            # Walk back over the local part: `@` is cheap to find, a leading local part is not.
            start, floor = at, max(0, at - 64)
            while start > floor and text[start - 1] in _LOCAL_CHARS:
                start -= 1
            before = text[start - 1] if start else " "
            value = text[start : m.end()]
            if (
                start < at
                and (text[start].isalnum() or text[start] == "_")
                and not (before.isalnum() or before in "_.%+-@")
                and value not in _EMAIL_SET
                # `git@host:owner/repo` is an SSH remote; `x@self.w` is a matrix product.
                and text[start:at].lower() != "git"
                and not m.group().startswith(("self.", "cls."))
            ):
                spans.append((start, m.end()))
            at = text.find("@", m.end())
        else:
            at = text.find("@", at + 1)
    return spans


# ---------------------------------------------------------------- ip
# Anchored on the first dot (a literal `re` finds fast); the first octet is checked by hand.
_IPV4_TAIL_RE = re.compile(r"\.(?<=\d\.)\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w@]|\.\w|-\d)")
_IPV6_HINT_RE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_RE = re.compile(
    r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f]{0,3}:(?:[0-9A-Fa-f]{0,4}:){1,6}"
    r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:@]|\.\w)"
)
# Text just before a dotted quad that marks it as a version, requirement or section number.
_VERSION_CTX_RE = re.compile(
    r"version|(?:\b(?:v|ver|rev|revision|release|build|sections?|sec|chapters?|clause|fig(?:ure)?"
    r"|table|step|rule|item|oid)\.?|§|[=!~<>]=)[\s:=(\"'\[]{0,3}$",
    re.IGNORECASE,
)
_NON_PUBLIC_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/8", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)
_DNS_RESOLVERS = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112",
        "208.67.222.222", "208.67.220.220", "2001:4860:4860::8888", "2001:4860:4860::8844",
        "2606:4700:4700::1111", "2606:4700:4700::1001", "2620:fe::fe", "2620:fe::9",
        "2620:119:35::35", "2620:119:53::53",
    )
)


def _ip_placeholder(value: str) -> str:
    if ":" in value:  # one placeholder per address, however it is spelled
        return _pick(str(ipaddress.IPv6Address(value)), IPV6_PLACEHOLDERS)
    return _pick(value, IPV4_PLACEHOLDERS)


def _is_public(value: str) -> bool:
    try:  # rejects octets > 255, leading zeros, times `12:30:45`, MACs, `a::b::c`
        addr = ipaddress.IPv6Address(value) if ":" in value else ipaddress.IPv4Address(value)
    except ValueError:
        return False
    # The explicit list keeps answers stable across Python versions, whose `is_global` tables
    # differ; `is_global` still catches the rarer special-purpose ranges.
    if not addr.is_global or addr.is_multicast or addr in _DNS_RESOLVERS:
        return False
    return not any(addr.version == n.version and addr in n for n in _NON_PUBLIC_NETS)


def _ip_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    verdicts: dict[str, bool] = {}  # files repeat their addresses; parsing is the slow part

    def is_public(value: str) -> bool:
        if value not in verdicts:
            verdicts[value] = _is_public(value)
        return verdicts[value]

    if _IPV6_HINT_RE.search(text):
        for m in _IPV6_RE.finditer(text):
            value = m.group()
            # Three non-empty groups at least: rules out slices (`x[1::2]`) and `a::b` scopes.
            if sum(1 for g in value.split(":") if g) >= 3 and is_public(value):
                spans.append(m.span())
    for m in _IPV4_TAIL_RE.finditer(text):
        start = m.start()
        while start > 0 and text[start - 1] in _DIGITS:
            start -= 1
        before = text[start - 1] if start else " "
        if m.start() - start > 3 or before.isalnum() or before in "_.-":
            continue  # part of a longer dotted or digit run: OIDs, `v1.2.3.4`, `pkg-1.2.3.4`
        if not is_public(text[start : m.end()]):
            continue
        lo = max(text.rfind("\n", max(0, start - 40), start) + 1, start - 40)
        if _VERSION_CTX_RE.search(text, lo, start) is None:
            spans.append((start, m.end()))
    return spans


# ---------------------------------------------------------------- secrets
_PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,20} PRIVATE KEY(?: BLOCK)?-----"
    # PEM body, headers (`Proc-Type: 4,ENCRYPTED`), `\n` escapes, `#` comment marks; no quotes,
    # and no `--`, so a BEGIN without END fails at the next marker instead of scanning on.
    r"(?:[A-Za-z0-9+/=\s:,.#\\]|-(?!-))*"
    r"-----END[A-Z0-9 ]{0,20} PRIVATE KEY(?: BLOCK)?-----"
)
# `re` finds a literal prefix fast but scans an alternation (or a leading lookbehind) slowly:
# a literal-prefixed hint per token family gates its full pattern.
_TOKEN_RES = tuple(
    (re.compile(hint), re.compile(r"(?<![A-Za-z0-9_-])(?:" + full + r")(?![A-Za-z0-9_-])"))
    for hint, full in (
        (
            r"A(?<![A-Za-z0-9_-]A)(?:KIA|SIA|Iza)",
            r"(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}",
        ),
        (
            r"g(?<![A-Za-z0-9_-]g)(?:h[pousr]|ithub_pat)_",
            r"gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244}",
        ),
        (r"xox(?<![A-Za-z0-9_-]xox)[baprs]-", r"xox[baprs]-[A-Za-z0-9-]{10,250}"),
        (
            r"k_(?<=[spr]k_)(?<![A-Za-z0-9_-].k_)(?:live|test)_",
            r"[spr]k_(?:live|test)_[A-Za-z0-9]{24,247}",
        ),
        (  # `sk-` alone is a common prefix: require mixed case and digits, like real keys
            r"sk-(?<![A-Za-z0-9_-]sk-)",
            r"sk-(?=[\w-]*[A-Z])(?=[\w-]*[a-z])(?=[\w-]*\d)(?:proj-|svcacct-|admin-)?"
            r"[A-Za-z0-9_-]{32,250}",
        ),
    )
)
_OP = r"[\"'\]]{0,2}\s*(?:=>|:=|=|:)(?!=)\s*"  # after `"key"`, `d["key"]`; not `==`
# A keyword must END the name (`DB_PASSWORD`, `client_secret`, `apiKey`), which rejects
# `tokenizer`, `token_type`, `password_field`, `author`, `auth_backend` and the like.
# Each regex starts AT a keyword found with str.find (see _ASSIGN_KEYWORDS).
_ASSIGN_RE = re.compile(
    r"(?:pass(?:word|wd|phrase)|pwd|secret|token|auth(?:orization)?|credentials?"
    r"|(?:(?<=api)|(?<=api[_-])|(?<=access)|(?<=access[_-])|(?<=private)|(?<=private[_-]))key)"
    r"(?:[_-]?(?:key|value|str|string|hash|\d+))?(?!\w)"
    r"(?:[\"'\]]{0,2}\s*:\s*[A-Za-z_][\w.]*(?:\[\w+\])?(?:\s*\|\s*None)?)?"  # type annotation
    + _OP + r"[rRbBuUfF]{0,2}(?:\"([^\"\\\n]*)\"|'([^'\\\n]*)')",
    re.IGNORECASE,
)
# ~/.aws/credentials style: the value may be unquoted.
_AWS_SECRET_RE = re.compile(
    r"(?:(?<=aws)|(?<=aws[_-]))secret(?:[_-]?access)?[_-]?key"
    + _OP
    + r"[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)
_ASSIGN_KEYWORDS = ("pass", "pwd", "secret", "token", "auth", "credential", "key")
_AUTH_SCHEME_RE = re.compile(r"(?:Bearer|Basic|Token|Bot) +(?=\S+$)", re.IGNORECASE)
_PLACEHOLDER_WORDS = frozenset(
    ("password", "passwd", "secret", "token", "changeme", "none", "null", "undefined", "default",
     "required", "optional", "string", "hidden", "redacted", "missing", "invalid", "unknown")
)
_PLACEHOLDER_HINTS = (
    "example", "placeholder", "changeme", "change_me", "dummy", "redacted", "your_", "your-",
    "yourpassword", "xxx", "***", "...", "<", ">", "{", "}", "$", "%s", "%(", "%d",
)
_ENV_NAME_RE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Module paths (`django.contrib.auth`); OIDs and versions.
_DOTTED_NAME_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[\d.]+\.\d+")
_QUOTED_RE = re.compile(r"([\"'])([A-Za-z0-9+/=_-]{20,100})\1")
_HEXISH_RE = re.compile(r"(?:sha\d+[:-])?[0-9a-fA-F-]+")
_WORD_RE = re.compile(r"[A-Z]?[a-z]{3,}|(?<![A-Za-z])[A-Z]{3,}(?![A-Za-z])")
_LOOSE_WORD_RE = re.compile(r"[A-Z][a-z]{2,}|[a-z]{3,}|(?<![A-Za-z])[A-Z]{3,}(?![A-Za-z])")


def _is_placeholder_value(value: str) -> bool:
    """True for assigned values that are clearly not secrets: templates, env names, paths."""
    low = value.lower()
    if len(value) < 6 or len(set(value)) <= 2 or value in _SECRET_SET:
        return True
    if low in _PLACEHOLDER_WORDS or any(h in low for h in _PLACEHOLDER_HINTS):
        return True
    if any(c.isspace() for c in value) or "://" in value or value.startswith(("/", ".", "~")):
        return True  # prose, URLs, paths
    return bool(_ENV_NAME_RE.fullmatch(value) or _DOTTED_NAME_RE.fullmatch(value))


def _mixed(s: str) -> bool:
    return any(map(str.isupper, s)) and any(map(str.islower, s)) and any(map(str.isdigit, s))


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(k / n * math.log2(k / n) for k in (s.count(c) for c in set(s)))


def _wordy(s: str) -> bool:
    # Word-like runs cover ~25% of a random base62 string and most of an identifier or a model
    # name. Over half of the string, or over half by a looser measure with English-like vowel
    # density, reads as words: this misses ~6% of random 20-char keys, ~2% of 40-char ones.
    half = len(s) / 2
    if sum(map(len, _WORD_RE.findall(s))) > half:
        return True
    if sum(c in "aeiouAEIOU" for c in s) < 0.25 * sum(map(str.isalpha, s)):
        return False
    return sum(map(len, _LOOSE_WORD_RE.findall(s))) > half


def _looks_random(s: str) -> bool:
    """True for a key-like string: mixed case and digits, high entropy, not words or a hash."""
    if s in _SECRET_SET or s.startswith(("/", "sha1-", "sha256-", "sha384-", "sha512-")):
        return False
    if _HEXISH_RE.fullmatch(s) or not _mixed(s):  # hex digests, git SHAs, UUIDs; identifiers
        return False
    n = len(s)
    if _entropy(s) < min(4.0, 0.85 * math.log2(n)):  # random base62 sits near log2(n) when short
        return False
    if _wordy(s):
        return False
    steps = sum(1 for a, b in zip(s, s[1:]) if ord(b) - ord(a) == 1)
    return steps <= 0.25 * n  # alphabets and counting runs ("ABC...xyz0123456789+/")


def _assigned_spans(text: str) -> list[tuple[int, int]]:
    low = text.lower()
    if len(low) != len(text):  # a few non-ASCII letters lengthen when lowered; rare
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    spans = set()
    for kw in _ASSIGN_KEYWORDS:
        i = low.find(kw)
        while i != -1:
            m = _ASSIGN_RE.match(text, i) or (kw == "secret" and _AWS_SECRET_RE.match(text, i))
            if m:
                g = 1 if m.group(1) is not None else 2
                value, (s, e) = m.group(g), m.span(g)
                scheme = _AUTH_SCHEME_RE.match(value)
                if scheme:  # `"Authorization": "Bearer <token>"`: redact only the credential
                    s += scheme.end()
                    value = value[scheme.end() :]
                bare = m.re is _AWS_SECRET_RE  # maybe unquoted: demand a random-looking value
                if not _is_placeholder_value(value) and (not bare or _looks_random(value)):
                    spans.add((s, e))
            i = low.find(kw, i + 1)
    return list(spans)


def _secret_placeholder(value: str) -> str:
    return _pick(value, SECRET_PLACEHOLDERS)


def redact_private_keys(text: str, placeholder: str = PRIVATE_KEY_PLACEHOLDER) -> tuple[str, int]:
    """Replace every complete PEM/OpenSSH/PGP private key block by `placeholder`; return the text and the count."""
    if "PRIVATE KEY" not in text:
        return text, 0
    return _PRIVATE_KEY_RE.subn(placeholder, text)


def _redact_secrets(text: str) -> tuple[str, int]:
    # Order matters: a token inside `api_key = "..."` is replaced once, by the token pass; the
    # later passes see a placeholder and leave it alone.
    text, total = redact_private_keys(text)
    for hint, rx in _TOKEN_RES:
        if hint.search(text):
            text, n = _splice(text, (m.span() for m in rx.finditer(text)), _secret_placeholder)
            total += n
    text, n = _splice(text, _assigned_spans(text), _secret_placeholder)
    total += n
    quoted = (m.span(2) for m in _QUOTED_RE.finditer(text) if _looks_random(m.group(2)))
    text, n = _splice(text, quoted, _secret_placeholder)
    return text, total + n


class Redactor:
    """Redacts the chosen PII kinds; holds nothing but the validated kinds."""

    def __init__(self, kinds: Iterable[str] = PII_KINDS) -> None:
        self.kinds = tuple(dict.fromkeys(kinds))
        unknown = set(self.kinds) - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; expected some of {PII_KINDS}")

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """Return the redacted text and a count per requested kind (zeros included)."""
        counts = dict.fromkeys(self.kinds, 0)
        # Secrets first: a password that looks like an email is replaced as a secret.
        if "secret" in counts:
            text, counts["secret"] = _redact_secrets(text)
        if "email" in counts and "@" in text:
            text, counts["email"] = _splice(text, _email_spans(text), _email_placeholder)
        if "ip" in counts and ("." in text or ":" in text):
            text, counts["ip"] = _splice(text, _ip_spans(text), _ip_placeholder)
        return text, counts


_DEFAULT = Redactor()


def redact(text: str, kinds: Iterable[str] = PII_KINDS) -> tuple[str, dict[str, int]]:
    """Redact emails, public IPs and secrets; return the new text and a count per requested kind."""
    redactor = _DEFAULT if kinds is PII_KINDS else Redactor(kinds)
    return redactor.redact(text)
