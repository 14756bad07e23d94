"""The auditor's checks: is what is stored what the policy allows?

Design overview. The audit trusts nothing the operator says. It reads the policy
file and recomputes its fingerprint, introspects the database with sqlite-utils,
reads every distinct stored value of every text column, reads the key ring file
as raw JSON, and re-verifies the event log's HMAC chain from the first event. Each
check yields a :class:`Check` with a pass/fail verdict, evidence counts and the
details a person needs to act; :class:`Report` renders them as JSON, Markdown or
HTML. No check repeats a stored value it flags as personal data - only where it is.

Checks: (a) policy fingerprint matches the last one recorded; (b) every table and
column is declared; (c) stored text holds no personal data; (d) stored values match
their declared types (days without clock time, opaque blobs of the right size);
(e) retention holds; (f) key states: no card under a retired version, no retired
material left (nor a copy of the ring left by an interrupted write), ring file
private, ring and database agree; (g) the event log chain verifies; (h) SQLite's
integrity check; (i) the insights releases the log records stay within the policy's
privacy budget, and replaying each one's noise with OpenDP gives the epsilon recorded;
(j) the suggestion model file, if any, is one this version reads (trees over store-wide
features and counts: its codec accepts nothing about a card), private to its owner, and
its fingerprint is reported.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

from . import files, insights, pii, ranker
from .errors import ModelError, PolicyViolation, StoreError
from .keyring import stale_copies
from .policy import _CATEGORY, _NAME, Policy
from .service import DB_NAME, KEYRING_NAME, POLICY_NAME, Service, event_payload
from .storage import database_url
from .store import integrity_problems
from .vocabulary import PRIVATE_LABEL

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}([+-]\d{2}:\d{2})?")
_BLOB_SIZE = {"blob32": 32, "blob16": 16, "blob8": 8}
_SCANNED_TYPES = {"category", "name", "lines_json", "json"}


@dataclass
class Check:
    key: str
    title: str
    passed: bool
    evidence: str
    details: list[str] = field(default_factory=list)


@dataclass
class Report:
    home: str
    day: str
    policy_fingerprint: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"passed": self.passed, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        out = [
            f"# anoncard audit: {verdict}",
            "",
            f"- home: `{self.home}`",
            f"- day: {self.day}",
            f"- policy fingerprint: `{self.policy_fingerprint}`",
            "",
            "| check | result | evidence |",
            "|---|---|---|",
        ]
        out += [f"| {c.key} {c.title} | {'pass' if c.passed else '**FAIL**'} | {c.evidence} |" for c in self.checks]
        for c in self.checks:
            if c.details:
                out += ["", f"## {c.key} {c.title}", ""] + [f"- {d}" for d in c.details]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr class={'pass' if c.passed else 'fail'}><td>{e(c.key)} {e(c.title)}</td>"
            f"<td>{'pass' if c.passed else 'FAIL'}</td><td>{e(c.evidence)}</td></tr>"
            for c in self.checks
        )
        details = "".join(
            f"<h2>{e(c.key)} {e(c.title)}</h2><ul>" + "".join(f"<li>{e(d)}</li>" for d in c.details) + "</ul>"
            for c in self.checks
            if c.details
        )
        return (
            "<!doctype html><html><head><meta charset=utf-8><title>anoncard audit</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:.3em .6em}.fail{background:#fdd}.pass{background:#dfd}"
            f"</style></head><body><h1>anoncard audit: {'PASS' if self.passed else 'FAIL'}</h1>"
            f"<p>home <code>{e(self.home)}</code>, day {e(self.day)}, policy fingerprint "
            f"<code>{e(self.policy_fingerprint)}</code></p>"
            f"<table><tr><th>check</th><th>result</th><th>evidence</th></tr>{rows}</table>{details}</body></html>\n"
        )

    def render(self, fmt: str) -> str:
        return {"json": self.to_json, "md": self.to_markdown, "html": self.to_html}[fmt]()

    def write(self, path: Path) -> Path:
        """Write the report to the new file ``path`` (mode 0600), in the format its suffix names
        (.json, .html/.htm, else Markdown). An existing file or a link there is refused.

        Raises:
            PolicyViolation: ``path`` exists or its directory is refused (field 'report').
            OutputError: the report could not be written.
        """
        path = Path(path)
        fmt = {".md": "md", ".html": "html", ".htm": "html", ".json": "json"}.get(path.suffix.lower(), "md")
        return files.create(path, self.render(fmt).encode("utf-8"), field="report")


_KEYS = "abcdefghij"


AS_OF_FROM = date(2000, 1, 1)


def run(home: Path, *, today: date | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """Audit a home. Never writes to it.

    ``today`` audits retention as of another day (any day from 2000-01-01 on: the audit
    only reads, so a past day shows what was due then, a later one what will be due).
    A database that cannot be read (a damaged page) fails the checks that need it and
    SQLite's integrity check, in a report like any other - the audit never stops half way.

    Raises:
        PolicyViolation: ``today`` is before 2000-01-01 (field 'at').
    """
    if today is not None and today < AS_OF_FROM:
        raise PolicyViolation(f"field 'at': the audit's day must be {AS_OF_FROM} or later", field="at")
    home = Path(home)
    step = progress or (lambda _name: None)
    fns = (
        _fingerprint,
        _schema,
        _personal_data,
        _types,
        _retention,
        _keys,
        _event_chain,
        _integrity,
        _privacy_budget,
        _suggestion_model,
    )
    try:
        svc = Service.open(home, check_policy=False)
    except (StoreError, sqlite3.DatabaseError) as exc:
        today = today or date.today()
        checks = [_not_run(key, fn, exc) for key, fn in zip(_KEYS, fns[:7], strict=False)]
        if database_url(home) is None:
            problems, title = integrity_problems(home / DB_NAME), _INTEGRITY
        else:
            problems, title = [exc.message if isinstance(exc, StoreError) else str(exc)], "PostgreSQL integrity check"
        checks.append(Check("h", title, False, f"{len(problems)} problems", problems))
        checks.append(_not_run("i", _privacy_budget, exc))
        checks.append(_suggestion_model(None, home, today))
        fingerprint = Policy.load(home / POLICY_NAME).fingerprint
        return Report(str(home), today.isoformat(), fingerprint, checks)
    try:
        today = today or svc.clock().date()
        checks = []
        for key, fn in zip(_KEYS, fns, strict=True):
            step(fn.__name__.strip("_"))
            try:
                checks.append(fn(svc, home, today))
            except (StoreError, sqlite3.DatabaseError) as exc:
                checks.append(_not_run(key, fn, exc))
        return Report(str(home), today.isoformat(), svc.policy.fingerprint, checks)
    finally:
        svc.close()


def _not_run(key: str, fn: Callable, exc: Exception) -> Check:
    """A check that could not read what it checks: failed, saying why (never a traceback)."""
    reason = exc.message if isinstance(exc, StoreError) else str(exc)
    title = fn.__name__.strip("_").replace("_", " ")
    return Check(key, title, False, "not run: the database cannot be read", [reason])


def _fingerprint(svc: Service, home: Path, today: date) -> Check:
    recorded = svc.recorded_policy()
    actual = Policy.load(home / "policy.toml").fingerprint
    ok = recorded == actual
    details = [] if ok else [f"recorded {recorded}", f"policy file {actual}"]
    return Check("a", "policy fingerprint matches the event log", ok, f"fingerprint {actual[:16]}…", details)


def _schema(svc: Service, home: Path, today: date) -> Check:
    schema = svc.store.schema()
    declared = svc.policy.storage
    extra = []
    for table, columns in schema.items():
        if table not in declared:
            extra.append(f"table {table} is not declared in the policy")
            continue
        extra += [
            f"column {table}.{c} is not declared in the policy" for c in columns if c not in declared[table].columns
        ]
    n_cols = sum(len(c) for c in schema.values())
    return Check(
        "b", "every table and column is declared", not extra, f"{len(schema)} tables, {n_cols} columns checked", extra
    )


def _columns(svc: Service, types: set[str] | None = None):
    schema = svc.store.schema()
    for table, spec in svc.policy.storage.items():
        for column, rule in spec.columns.items():
            if table in schema and column in schema[table] and (types is None or rule.type in types):
                yield table, column, rule.type


def _texts(kind: str, value: object) -> list[str]:
    """The strings inside one stored value of a text column."""
    if not isinstance(value, str):
        return []
    if kind == "lines_json":
        try:
            return [str(row[0]) for row in json.loads(value)]  # the category of each line
        except (ValueError, TypeError, IndexError, KeyError):
            return [value]
    if kind == "json":
        try:
            doc = json.loads(value)
        except ValueError:
            return [value]
        out: list[str] = []

        def walk(v: object) -> None:
            if isinstance(v, str):
                if not _DIGEST.fullmatch(v):  # fingerprints are hex digests, not free text
                    out.append(v)
            elif isinstance(v, dict):
                for k, x in v.items():
                    out.append(str(k))
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        walk(doc)
        return out
    return [value]


def _personal_data(svc: Service, home: Path, today: date) -> Check:
    scanned, found = 0, []
    sensitive = svc.programme.vocabulary.sensitive
    schema = svc.store.schema()
    for table, column, kind in _columns(svc, _SCANNED_TYPES):
        per_card = "card_id" in schema.get(table, ())
        for value in svc.store.distinct_values(table, column):
            for text in _texts(kind, value):
                if per_card and text in sensitive:  # an Art. 9 inference tied to a card
                    found.append(f"{table}.{column}: a card's row names a category the programme flags sensitive")
                # event details hold fingerprints and dates of operator events: not scanned for dates
                kinds = pii.scan(text, region=svc.policy.phone_region, today=today)
                scanned += 1
                if kinds:
                    found.append(f"{table}.{column}: a stored value looks like {', '.join(kinds)}")
    return Check("c", "stored text holds no personal data", not found, f"{scanned} distinct values scanned", found)


def _conforms(kind: str, value: object) -> bool:
    if kind in _BLOB_SIZE:
        return isinstance(value, bytes) and len(value) == _BLOB_SIZE[kind]
    if kind == "integer":
        return isinstance(value, int)
    if kind == "day":
        return isinstance(value, str) and bool(_DAY.fullmatch(value))
    if kind == "timestamp":
        return isinstance(value, str) and bool(_TIMESTAMP.fullmatch(value))
    if kind == "category":
        return isinstance(value, str) and bool(_CATEGORY.fullmatch(value))
    if kind == "name":
        return isinstance(value, str) and bool(_NAME.fullmatch(value))
    if kind == "key_state":
        return value in ("primary", "verify-only", "retired")
    if kind == "offer_kind":
        return value in ("percent", "amount", "points")
    if kind == "document_kind":
        return value in ("checkout", "refund", "redeem")
    if kind == "lines_json":
        try:
            lines = json.loads(value)
            # [category, cents] or a checkout's record [category, cents, points, bonus, discount];
            # a sensitive category is recorded under the private label
            return all(
                isinstance(row, list)
                and len(row) in (2, 5)
                and isinstance(row[0], str)
                and (row[0] == PRIVATE_LABEL or bool(_CATEGORY.fullmatch(row[0])))
                and all(isinstance(n, int) and not isinstance(n, bool) for n in row[1:])
                for row in lines
            )
        except (ValueError, TypeError):
            return False
    if kind == "json":
        try:
            json.loads(value)
            return True
        except (ValueError, TypeError):
            return False
    return False


def _types(svc: Service, home: Path, today: date) -> Check:
    checked, bad = 0, []
    for table, column, kind in _columns(svc):
        values = svc.store.distinct_values(table, column)
        checked += len(values)
        wrong = sum(1 for v in values if not _conforms(kind, v))
        if wrong:
            bad.append(f"{table}.{column}: {wrong} distinct values are not of type {kind}")
    return Check("d", "stored values match their declared types", not bad, f"{checked} distinct values checked", bad)


def _retention(svc: Service, home: Path, today: date) -> Check:
    p = svc.policy
    limits = {
        ("txns", "day"): p.documents_days,
        ("history", "day"): p.history_days,
        ("visits", "day"): p.history_days,
        ("category_weeks", "week"): p.history_days,
        ("ghosts", "issued_day"): p.documents_days,
    }
    late = []
    for (table, column), days in limits.items():
        cutoff = (today - timedelta(days=days)).isoformat()
        n = svc.store.count_before(table, column, cutoff)
        if n:
            late.append(f"{table}: {n} rows dated before {cutoff} (kept longer than {days} days; run 'anoncard purge')")
    counts = svc.store.counts()
    return Check(
        "e",
        "retention holds",
        not late,
        f"{counts['txns']} documents ≤ {p.documents_days} days, "
        f"{counts['history'] + counts['visits']} history rows ≤ {p.history_days} days",
        late,
    )


def _keys(svc: Service, home: Path, today: date) -> Check:
    problems = []
    path = home / KEYRING_NAME
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        problems.append(f"key ring file has mode {mode:04o}; expected 0600")
    raw = json.loads(path.read_text(encoding="utf-8"))
    ring_states = {}
    for k in raw.get("keys", []):
        ring_states[k["version"]] = k["state"]
        if k["state"] == "retired" and k.get("material") is not None:
            problems.append(f"key v{k['version']} is retired but its material is still in the key ring")
    for stale in stale_copies(path):
        problems.append(
            f"{stale.name} is a copy of the key ring left by an interrupted write (it may keep retired key"
            " material); delete it"
        )
    stored = svc.store.key_states()
    if stored != ring_states:
        problems.append(f"database key states {stored} differ from the key ring {ring_states}")
    retired = [v for v, s in {**ring_states, **stored}.items() if s == "retired"]
    linked = {v: svc.store.count_cards(v) for v in retired}
    problems += [f"{n} cards still linked under retired key v{v}" for v, n in linked.items() if n]
    return Check(
        "f",
        "no card under a retired key; no retired material left",
        not problems,
        f"{len(ring_states)} key versions, {len(retired)} retired",
        problems,
    )


def _event_chain(svc: Service, home: Path, today: date) -> Check:
    previous, expected_id, broken = bytes(32), 1, []
    events = svc.store.events()
    for e in events:
        event_id, at, kind, detail, mac = e.id, e.at, e.kind, e.detail, e.mac
        if event_id != expected_id:
            broken.append(f"event {expected_id} is missing (next is {event_id})")
        if svc.ring.event_mac(previous, event_payload(event_id, at, kind, detail)) != mac:
            broken.append(f"event {event_id} ({kind}) does not match its chain link: edited or forged")
        previous, expected_id = mac, event_id + 1
    return Check("g", "the event log's hash chain verifies", not broken, f"{len(events)} events verified", broken)


_INTEGRITY = "SQLite integrity check"


def _integrity(svc: Service, home: Path, today: date) -> Check:
    result = svc.store.integrity_check()
    ok = result == ["ok"]
    return Check("h", svc.store.INTEGRITY_CHECK, ok, "ok" if ok else f"{len(result)} problems", [] if ok else result)


def _privacy_budget(svc: Service, home: Path, today: date) -> Check:
    """(i) Releases recorded within the budget declared, and each one's noise replayed."""
    title = "insights releases stay within the privacy budget"
    events = svc.store.events(insights.RELEASE_EVENT)
    releases = [(e.id, json.loads(e.detail)) for e in events]
    if not releases:
        return Check("i", title, True, "no releases recorded", [])
    problems: list[str] = []
    try:
        problems = insights.budget_problems(releases, svc.policy.insights)
        problems += insights.replay_problems(releases)  # imports OpenDP
    except ImportError:  # the budget's own problems are kept
        problems.append("OpenDP is not installed, so the noise cannot be replayed (install anoncard[insights])")
    except (KeyError, TypeError, ValueError) as exc:
        problems = [f"a release record is malformed ({type(exc).__name__})"]
    spent = sum(float(d["epsilon"]) for _, d in releases)
    rules = svc.policy.insights
    declared = "none declared"
    if rules is not None:
        declared = f"{rules.epsilon_per_period} per period, {rules.epsilon_per_year} a year"
        if rules.uplift_epsilon is not None or rules.cohorts_epsilon is not None:
            declared = f"figures {declared}"
        if rules.uplift_epsilon is not None:
            declared += f"; uplift {rules.uplift_epsilon} per campaign period, {rules.uplift_epsilon_per_year} a year"
        if rules.cohorts_epsilon is not None:
            declared += f"; cohorts {rules.cohorts_epsilon} a release, {rules.cohorts_epsilon_per_year} a year"
    evidence = f"{len(releases)} releases, epsilon {spent:.4g} in all ({declared})"
    return Check("i", title, not problems, evidence, problems)


def _suggestion_model(svc: Service | None, home: Path, today: date) -> Check:
    """(j) The suggestion model: what it holds, its fingerprint, and that only its owner reads it."""
    title = "the suggestion model holds nothing about a card"
    path = home / ranker.MODEL_NAME
    try:
        st = path.lstat()
    except FileNotFoundError:
        return Check("j", title, True, "no model file: the entrance uses the built-in engine", [])
    if not stat.S_ISREG(st.st_mode):
        return Check("j", title, False, f"{ranker.MODEL_NAME} is not a regular file", [])
    problems = []
    if st.st_mode & 0o077:
        problems.append(f"{ranker.MODEL_NAME} is readable by others (mode {stat.S_IMODE(st.st_mode):o}; want 600)")
    try:
        model = ranker.decode(path.read_bytes())
    except ModelError as exc:
        return Check("j", title, False, "the model file is not one this version reads", [*problems, exc.message])
    except OSError as exc:
        return Check("j", title, False, "the model file cannot be read", [*problems, type(exc).__name__])
    d = model.describe()
    fitted = d["fitted"]
    evidence = f"fingerprint {d['fingerprint'][:16]}…, {d['habit_trees']} + {d['discovery_trees']} trees"
    details = [
        f"fingerprint {d['fingerprint']}",
        f"holds {d['habit_trees']} habit and {d['discovery_trees']} discovery trees with {d['leaves']} leaves "
        f"over {len(d['features'])} features: {', '.join(d['features'])}",
        f"fitted on {fitted['day']} from {fitted['origins']} visits of {fitted['cards']} cards "
        f"({fitted['rows']} candidate rows, seed {fitted['seed']}): counts only, no card, token or day of a card",
        *problems,
    ]
    return Check("j", title, not problems, evidence, details)
