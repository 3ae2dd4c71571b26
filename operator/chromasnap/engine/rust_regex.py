"""Chroma's ``$regex`` (Rust ``regex`` syntax) compiled for RE2, a linear-time engine.

chromadb evaluates ``$regex`` with Rust's ``regex`` crate, which runs in time linear in
the document. Python's ``re`` backtracks, so a pattern like ``(a+)+$`` on a long document
would hold a reader's CPU (and the GIL) for hours. RE2 is linear like Rust's engine and
shares most of its syntax; ``_RustToRE2`` rewrites the parts where the two differ and
rejects what Rust rejects but RE2 would accept, so fresh reads filter the delta tail
(``filters``) the way chromadb filters the snapshot.
"""

from __future__ import annotations

import functools
import re
from typing import Protocol

import re2  # type: ignore[import-untyped]

from chromasnap.engine.errors import InvalidArgument


class CompiledRegex(Protocol):
    """What a compiled ``$regex`` offers: an unanchored search."""

    def search(self, text: str) -> object | None:
        """A match object, or ``None`` when the pattern occurs nowhere in ``text``."""
        ...


MAX_REGEX_CHARS = 65_536
"""Longest accepted pattern: translating and compiling stay well under a millisecond per
kilobyte, and Rust's own compiled-size limit (10 MB) refuses far shorter patterns of the
expensive kind (``\\w{1000}``)."""

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # bad patterns are the client's error, not log noise

# Rust's \w is Unicode (UTS#18): Alphabetic, marks, decimal digits, connector punctuation,
# join controls. RE2's \w is ASCII, so spell it out; Alphabetic = letters, letter numbers,
# and Other_Alphabetic (marks, covered by \p{M}, plus the circled/squared letters below).
_WORD = ("\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}\\x{200C}\\x{200D}\\x{24B6}-\\x{24E9}"
         "\\x{1F130}-\\x{1F149}\\x{1F150}-\\x{1F169}\\x{1F170}-\\x{1F189}")
# Rust's \s is Unicode White_Space; RE2's is ASCII.
_SPACE_POINTS = (0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
_WHITE_SPACE = frozenset(chr(cp) for cp in _SPACE_POINTS)


def _ranges(points: list[int]) -> str:
    out: list[str] = []
    start = prev = points[0]
    for cp in [*points[1:], -2]:
        if cp != prev + 1:
            out.append(f"\\x{{{start:X}}}" if start == prev
                       else f"\\x{{{start:X}}}-\\x{{{prev:X}}}")
            start = cp
        prev = cp
    return "".join(out)


_SPACE = _ranges(sorted(_SPACE_POINTS))
_NOT_SPACE = "".join(
    f"\\x{{{a:X}}}-\\x{{{b:X}}}" if a != b else f"\\x{{{a:X}}}"
    for a, b in zip([0, *(cp + 1 for cp in sorted(_SPACE_POINTS))],
                    [*(cp - 1 for cp in sorted(_SPACE_POINTS)), 0x10FFFF], strict=True)
    if a <= b
)

_POSIX_CLASSES = frozenset((
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
))

_GENERAL_CATEGORIES = (
    "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc",
    "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C",
    "Cc", "Cf", "Cs", "Co",
)
# Rust matches property names loosely (case, spaces, '_' and '-' ignored), long or short.
_CATEGORY_NAMES: dict[str, str] = {c.lower(): c for c in _GENERAL_CATEGORIES} | {
    "letter": "L", "uppercaseletter": "Lu", "lowercaseletter": "Ll", "titlecaseletter": "Lt",
    "modifierletter": "Lm", "otherletter": "Lo", "mark": "M", "combiningmark": "M",
    "nonspacingmark": "Mn", "spacingmark": "Mc", "enclosingmark": "Me", "number": "N",
    "decimalnumber": "Nd", "digit": "Nd", "letternumber": "Nl", "othernumber": "No",
    "punctuation": "P", "connectorpunctuation": "Pc", "dashpunctuation": "Pd",
    "openpunctuation": "Ps", "closepunctuation": "Pe", "initialpunctuation": "Pi",
    "finalpunctuation": "Pf", "otherpunctuation": "Po", "symbol": "S", "mathsymbol": "Sm",
    "currencysymbol": "Sc", "modifiersymbol": "Sk", "othersymbol": "So", "separator": "Z",
    "spaceseparator": "Zs", "lineseparator": "Zl", "paragraphseparator": "Zp", "other": "C",
    "control": "Cc", "format": "Cf", "surrogate": "Cs", "privateuse": "Co",
}
_FLAG_GROUP = re.compile(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
_COUNTED_REPETITION = re.compile(r"\{\d+(?:,\d*)?\}")
_POSIX_ITEM = re.compile(r"\[:\^?([a-z]+):\]")
# Escapes that mean the same in both dialects (besides punctuation, always a literal).
_SHARED_ESCAPES = frozenset("aftnrvbBAz")


def _shown(pattern: str) -> str:
    # Error messages quote the pattern, but not all 64 KiB of one.
    return repr(pattern) if len(pattern) <= 200 else f"{pattern[:200]!r}… ({len(pattern)} chars)"


def _unsupported(pattern: str, what: str) -> InvalidArgument:
    return InvalidArgument(
        f"Regex {_shown(pattern)} uses {what}, which chromasnap cannot evaluate on the "
        "unindexed tail of fresh reads; rewrite the pattern without it"
    )


@functools.lru_cache(maxsize=64)
def _script_exists(name: str) -> bool:
    try:
        re2.compile(f"\\p{{{name}}}", _RE2_OPTIONS)
    except re2.error:
        return False
    return True


class _RustToRE2:
    """One pass over a Rust ``regex`` pattern, writing the RE2 pattern that matches the same.

    Differences handled: Unicode ``\\d \\s \\w`` (RE2's are ASCII), ``\\u``/``\\U``
    escapes, ``(?<name>``, loose Unicode property names, the ``x`` (verbose) flag, and
    Rust-only word boundaries (``\\<``, ``\\>``, ``\\b{start}`` …, approximated by ``\\b``).
    Rejected like Rust does: look-around, backreferences, ``\\C``, ``\\Q…\\E``, a ``{``
    that is no counted repetition. Rejected because RE2 cannot express them: class set
    operations, nested classes, ``\\W`` inside a negated class with other items, the CRLF
    flag ``R``, ``(?-u)``. Known difference: ``\\b`` and ``\\B`` treat only ASCII letters,
    digits and ``_`` as word characters (RE2 has no Unicode word boundary).
    """

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        # Per open group, whether the x flag is on: RE2 has no x, so whitespace and
        # comments are dropped here.
        self.verbose = [False]

    def error(self, what: str) -> InvalidArgument:
        return InvalidArgument(f"Regex syntax error in {_shown(self.p)}: {what}")

    def translate(self) -> str:
        p, n = self.p, len(self.p)
        while self.i < n:
            c = p[self.i]
            if self.verbose[-1] and self._skip_insignificant():
                continue
            if c == "\\":
                self.out.append(self._escape_outside())
            elif c == "[":
                self.out.append(self._char_class())
            elif c == "(":
                self._open_group()
            elif c == ")":
                if len(self.verbose) > 1:
                    self.verbose.pop()
                self.out.append(")")
                self.i += 1
            elif c == "{":
                m = _COUNTED_REPETITION.match(p, self.i)
                if m is None:
                    raise self.error("a '{' must start a counted repetition like {2}, {2,} or "
                                     "{2,5}; escape it as \\{ to match it literally")
                self.out.append(m.group(0))
                self.i = m.end()
            else:
                self.out.append(c)
                self.i += 1
        return "".join(self.out)

    def _skip_insignificant(self) -> bool:
        c = self.p[self.i]
        if c in _WHITE_SPACE:
            self.i += 1
            return True
        if c == "#":
            end = self.p.find("\n", self.i)
            self.i = len(self.p) if end < 0 else end + 1
            return True
        return False

    def _open_group(self) -> None:
        p, i = self.p, self.i
        if not p.startswith("(?", i):
            self.out.append("(")
            self.verbose.append(self.verbose[-1])
            self.i += 1
            return
        rest = i + 2
        if p.startswith(("=", "!", "<=", "<!"), rest):
            raise self.error("look-around, including look-ahead and look-behind, is not supported")
        if p.startswith(("P<", "<"), rest):
            start = rest + (2 if p[rest] == "P" else 1)
            end = p.find(">", start)
            if end < 0:
                raise self.error("unclosed capture group name")
            self.out.append(f"(?P<{p[start:end]}>")
            self.verbose.append(self.verbose[-1])
            self.i = end + 1
            return
        fm = _FLAG_GROUP.match(p, rest)
        if fm is None:
            raise self.error("unrecognized group syntax after '(?'")
        on, off = fm.group(1), fm.group(2) or ""
        for flag in on + off:
            if flag not in "imsUuxR":
                raise self.error(f"unrecognized flag {flag!r}")
        if "R" in on + off:
            raise _unsupported(self.p, "the CRLF flag R")
        if "u" in off:
            raise _unsupported(self.p, "the flag group (?-u) (ASCII-only classes)")
        verbose = "x" in on or (self.verbose[-1] and "x" not in off)
        on, off = on.replace("u", "").replace("x", ""), off.replace("u", "").replace("x", "")
        spec = on + ("-" + off if off else "")
        if fm.group(3) == ":":
            self.out.append(f"(?{spec}:" if spec else "(?:")
            self.verbose.append(verbose)
        else:
            if spec:
                self.out.append(f"(?{spec})")
            self.verbose[-1] = verbose
        self.i = fm.end()

    def _escape_outside(self) -> str:
        p, i = self.p, self.i
        e = self._escape_letter()
        if e == "d":
            out = "\\p{Nd}"
        elif e == "D":
            out = "\\P{Nd}"
        elif e == "w":
            out = f"[{_WORD}]"
        elif e == "W":
            out = f"[^{_WORD}]"
        elif e == "s":
            out = f"[{_SPACE}]"
        elif e == "S":
            out = f"[{_NOT_SPACE}]"
        elif e in "<>":
            out = "\\b"
        elif e == "b" and p.startswith("{", i + 2):
            end = p.find("}", i + 3)
            if end < 0 or p[i + 3:end] not in ("start", "end", "start-half", "end-half"):
                raise self.error("unrecognized special word boundary: use \\b{start}, "
                                 "\\b{end}, \\b{start-half} or \\b{end-half}")
            self.i = end + 1
            return "\\b"
        elif e in "xuU":
            return self._hex_escape()
        elif e in "pP":
            return f"[{self._property()[0]}]"
        else:
            return self._plain_escape(e)
        self.i += 2
        return out

    def _escape_letter(self) -> str:
        if self.i + 1 >= len(self.p):
            raise self.error("incomplete escape sequence, reached end of pattern prematurely")
        e = self.p[self.i + 1]
        if e.isdigit():
            raise self.error("backreferences (and octal escapes) are not supported")
        return e

    def _plain_escape(self, e: str) -> str:
        self.i += 2
        if e in _SHARED_ESCAPES:
            return "\\" + e
        if e.isascii() and not e.isalnum():
            return "\\x{20}" if e == " " else "\\" + e
        raise self.error(f"unrecognized escape sequence \\{e}")

    def _hex_escape(self) -> str:
        p, i = self.p, self.i
        kind = p[i + 1]
        if p.startswith("{", i + 2):
            end = p.find("}", i + 3)
            if end < 0:
                raise self.error(f"unclosed \\{kind}{{")
            digits, self.i = p[i + 3:end], end + 1
        else:
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits, self.i = p[i + 2:i + 2 + width], i + 2 + width
            if len(digits) != width:
                raise self.error(f"\\{kind} needs {width} hexadecimal digits")
        if not digits or len(digits) > 8 or any(ch not in "0123456789abcdefABCDEF"
                                                 for ch in digits):
            raise self.error(f"invalid hexadecimal escape \\{kind}{digits}")
        cp = int(digits, 16)
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            raise self.error("hexadecimal literal is not a Unicode scalar value")
        return f"\\x{{{cp:X}}}"

    def _property(self) -> tuple[str, str]:
        """``\\p..``/``\\P..`` at ``self.i``: class-body items for it and for its complement
        (the first already honours ``\\P``)."""
        p, i = self.p, self.i
        negated = p[i + 1] == "P"
        if p.startswith("{", i + 2):
            end = p.find("}", i + 3)
            if end < 0:
                raise self.error("unclosed \\p{")
            name, self.i = p[i + 3:end], end + 1
        else:
            if i + 2 >= len(p):
                raise self.error("incomplete \\p escape")
            name, self.i = p[i + 2], i + 3
        positive, negative = self._property_items(name)
        return (negative, positive) if negated else (positive, negative)

    def _property_items(self, name: str) -> tuple[str, str]:
        key = re.sub(r"[\s_-]", "", name).lower()
        script: str | None = None
        if "=" in key:
            prop, key = key.split("=", 1)
            if prop in ("sc", "script"):
                script = name.split("=", 1)[1].strip()
            elif prop not in ("gc", "generalcategory"):
                raise _unsupported(self.p, f"the Unicode property \\p{{{name}}}")
        if script is None:
            if key == "any":
                return "\\p{Any}", "\\P{Any}"
            if key == "ascii":
                return "\\x{0}-\\x{7F}", "\\x{80}-\\x{10FFFF}"
            if key in ("lc", "casedletter"):
                return "\\p{Lu}\\p{Ll}\\p{Lt}", "\\P{L}\\p{Lm}\\p{Lo}"
            cat = _CATEGORY_NAMES.get(key)
            if cat is not None:
                return f"\\p{{{cat}}}", f"\\P{{{cat}}}"
            script = name
        words = re.split(r"[\s_-]+", script.strip())
        for candidate in (script, "_".join(w[:1].upper() + w[1:].lower() for w in words)):
            if re.fullmatch(r"[A-Za-z_]+", candidate) and _script_exists(candidate):
                return f"\\p{{{candidate}}}", f"\\P{{{candidate}}}"
        raise self.error(f"Unicode property \\p{{{name}}} not found (or not one chromasnap "
                         "supports: general categories, scripts, Any and ASCII)")

    def _char_class(self) -> str:
        p, n = self.p, len(self.p)
        self.i += 1
        negated = p.startswith("^", self.i)
        if negated:
            self.i += 1
        items: list[str] = []
        not_word = False  # \W seen: its complement is no union of \p items
        first = True
        while True:
            if self.i >= n:
                raise self.error("unclosed character class")
            c = p[self.i]
            if self.verbose[-1] and self._skip_insignificant():
                continue
            if c == "]":
                self.i += 1
                if first:  # a leading ']' is a literal in both dialects
                    items.append("\\]")
                    first = False
                    continue
                break
            first = False
            if c == "[":
                m = _POSIX_ITEM.match(p, self.i)
                if m is None:
                    raise _unsupported(self.p, "a nested character class")
                if m.group(1) not in _POSIX_CLASSES:
                    raise self.error(f"unknown POSIX class {m.group(0)}")
                items.append(m.group(0))
                self.i = m.end()
            elif p.startswith(("&&", "--", "~~"), self.i):
                raise _unsupported(self.p, "character class set operations")
            elif c == "\\":
                e = self._escape_letter()
                if e == "W":
                    not_word = True
                    self.i += 2
                elif e in "dDwsS":
                    items.append({"d": "\\p{Nd}", "D": "\\P{Nd}", "w": _WORD, "s": _SPACE,
                                  "S": _NOT_SPACE}[e])
                    self.i += 2
                elif e in "xuU":
                    items.append(self._hex_escape())
                elif e in "pP":
                    items.append(self._property()[0])
                elif e in "bBAz<>":
                    raise self.error(f"\\{e} is not allowed inside a character class")
                else:
                    items.append(self._plain_escape(e))
            else:
                items.append(c)
                self.i += 1
        body = "".join(items)
        if body.startswith("^"):
            body = "\\" + body
        if not not_word:
            return f"[{'^' if negated else ''}{body}]"
        if not negated:
            return f"(?:[^{_WORD}]|[{body}])" if body else f"[^{_WORD}]"
        if not body:
            return f"[{_WORD}]"
        raise _unsupported(self.p, "\\W together with other items in a negated class")


@functools.lru_cache(maxsize=128)
def compile_rust_regex(pattern: str) -> CompiledRegex:
    """Compile a pattern in Rust ``regex`` syntax to an RE2 regex that matches the same.

    RE2 runs in time linear in the document whatever the pattern, as Rust's engine does.
    Raises ``InvalidArgument`` for patterns Rust rejects (look-around, backreferences …),
    for the few RE2 cannot express, and for patterns over ``MAX_REGEX_CHARS``.
    """
    if len(pattern) > MAX_REGEX_CHARS:
        raise InvalidArgument(
            f"Regex of {len(pattern)} characters is over the limit of {MAX_REGEX_CHARS}; "
            "use a shorter pattern"
        )
    translated = _RustToRE2(pattern).translate()
    try:
        rx: CompiledRegex = re2.compile(translated, _RE2_OPTIONS)
    except re2.error as e:
        reason = e.args[0] if e.args else e
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidArgument(f"Regex syntax error in {_shown(pattern)}: {reason}") from None
    return rx
