"""When compactions run: the CronJob's cron line, and runs started on request.

The cron line is checked here the way Kubernetes parses it, because the CRD's
pattern only checks its shape, and a bad line would otherwise fail half-way
through applying the children. On-demand runs (the compact-now annotation, the
bootstrap run of a collection without a snapshot) map to deterministic Job names,
so a retried request never starts a second Job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

#: Run id of the compaction the operator starts when a collection has no snapshot yet.
BOOTSTRAP_RUN_ID = "init"

_CRON_MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, minimum, maximum, names): the five fields of a standard cron line, as the
# CronJob controller (robfig/cron's ParseStandard) reads them.
_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
CRON_HELP = "a cron line is 'minute hour day-of-month month day-of-week', e.g. '*/5 * * * *'"


def _cron_number(text: str, names: Mapping[str, int], what: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{what} field: {text!r} is not a number" + (
            " or a name (" + ", ".join(n.upper() for n in names) + ")" if names else ""))
    return int(text)


def _cron_range(expr: str, what: str, lo: int, hi: int, names: Mapping[str, int]) -> None:
    parts = expr.split("/")
    if len(parts) > 2:
        raise ValueError(f"{what} field: {expr!r} has more than one '/'")
    bounds = parts[0].split("-")
    if len(bounds) > 2:
        raise ValueError(f"{what} field: {expr!r} has more than one '-'")
    if bounds[0] in ("*", "?"):
        if len(bounds) > 1:
            raise ValueError(f"{what} field: {expr!r}: '*' cannot start a range")
        start, end = lo, hi
    else:
        start = _cron_number(bounds[0], names, what)
        end = _cron_number(bounds[1], names, what) if len(bounds) == 2 else start
        if len(parts) == 2 and len(bounds) == 1:
            end = hi  # "a/n" means from a to the maximum, every n
    if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) == 0):
        raise ValueError(f"{what} field: step in {expr!r} must be a positive number")
    if start < lo or end > hi:
        raise ValueError(f"{what} field: {expr!r} is out of range {lo}-{hi}")
    if start > end:
        raise ValueError(f"{what} field: {expr!r} starts after it ends")


def validate_schedule(schedule: str) -> None:
    """Raise ``ValueError`` (a message saying what to fix) unless the CronJob controller
    would accept ``schedule``.

    The CRD's pattern only checks the shape (five fields or a macro); this checks
    ranges, steps and names the way Kubernetes' cron parser does, so that a bad
    line is reported on the collection instead of failing the CronJob half-way
    through creating the children.
    """
    text = schedule.strip()
    if "TZ=" in text:
        raise ValueError("time zones (TZ= or CRON_TZ=) are not supported in the schedule; "
                         "schedules run in the kube-controller-manager's time zone")
    if text.startswith("@"):
        if text not in _CRON_MACROS:
            raise ValueError(f"{text!r} is not a supported macro (use one of "
                             + ", ".join(sorted(_CRON_MACROS)) + ")")
        return
    fields_ = text.split()
    if len(fields_) != 5:
        raise ValueError(f"{text!r} has {len(fields_)} fields; {CRON_HELP}")
    for value, (what, lo, hi, names) in zip(fields_, _CRON_FIELDS, strict=True):
        for expr in value.split(","):
            if not expr:
                raise ValueError(f"{what} field: {value!r} has an empty list item")
            _cron_range(expr, what, lo, hi, names)


def compaction_run_id(uid: str, request: str) -> str:
    """Deterministic run id for one value of the compact-now annotation.

    The same value always maps to the same Job name, so a retried handler never
    starts a second Job for one request; a new value starts a new one.
    """
    return hashlib.sha256(f"{uid}/{request}".encode()).hexdigest()[:10]
