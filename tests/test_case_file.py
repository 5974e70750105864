"""The case file (`tosengine audit export`) as a user gets it: real CLI runs, and a real headless Chromium
that renders the page and prints it to PDF."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.support import tosengine
from tosengine._version import __version__

SPAM = """policy: spam
title: No flooding
clause: You will not flood other people with posts.
clause_ref: https://example.com/terms#spam
severity: medium
action: warn
rules:
  - id: flood
    match: event.type == "post.created" and event.data.copies > 10
    once_per: 1d
    message: "{event.subject} posted {event.data.copies} copies of {event.data.text}"
"""
ANSWER = """policy: answer
title: Answer our requests
clause: You will answer our information requests by their due date.
clause_ref: https://example.com/terms#answer
severity: high
action: restrict
rules:
  - id: info-request-unanswered
    expect:
      after: event.type == "enforcement.info_request"
      fulfilled_by: event.type == "info.response" and event.data.case_id == after.data.case_id
      within: days(after.data.due_days)
    message: "{event.subject} did not answer {after.data.case_id}"
"""
NOTES = """policy: notes
title: Notes for the file
clause: We keep a note of unanswered requests.
severity: low
action: none
rules:
  - id: silence-noted            # a violation over a violation fact: its chain links to that violation
    match: fact.type == "violation" and fact.rule == "answer/info-request-unanswered"
    message: "{fact.subject} stayed silent"
"""
LADDER = """policy: ladder
title: Repeat violations escalate
clause: We take stronger action against repeated violations.
lists:
  climbing: [spam, answer]
ladder:
  within: 365d
  steps: [warn, restrict, disable]
  counts: climbing
"""

SUBJECT = "account:spammer"
# Run by the browser if anything user-controlled reached the page unescaped.
PWN = (
    "<script>document.documentElement.setAttribute('data-pwned','{}')</script>"
    "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\">"
)
HOSTILE = "account:" + PWN.format("subject")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SUPPRESSED = 30  # flood posts inside the first once_per window: a long case


def _at(delta: timedelta) -> str:
    return (T0 + delta).isoformat().replace("+00:00", "Z")


def _post(i: int, subject: str, at: timedelta, text: str = "buy now") -> dict[str, Any]:
    return {
        "id": f"p{i}",
        "source": "test/posts",
        "type": "post.created",
        "time": _at(at),
        "subject": subject,
        "data": {"copies": 50, "text": text},
    }


def _events() -> list[dict[str, Any]]:
    h = timedelta(hours=1)
    out = [_post(0, SUBJECT, 0 * h)]
    out += [_post(1 + i, SUBJECT, 1 * h + i * timedelta(minutes=10)) for i in range(SUPPRESSED)]
    out.append(
        {
            "id": "ir1",
            "type": "enforcement.info_request",
            "time": _at(12 * h),
            "subject": SUBJECT,
            "data": {"case_id": "IR-7", "due_days": 2},
        }
    )
    out.append(_post(100, SUBJECT, 24 * h))  # the window has closed: a new violation (ladder step 2)
    out.append(_post(101, SUBJECT, 25 * h))  # suppressed: a repeat record of one
    out.append(_post(200, HOSTILE, 26 * h, text=PWN.format("event")))
    out.append(_post(102, SUBJECT, 5 * 24 * h))  # moves the clock past the deadline and the windows
    return out


@pytest.fixture(scope="module")
def case_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The policies above replayed over the events above into a SQLite audit log."""
    d = tmp_path_factory.mktemp("case")
    pol = d / "policies"
    pol.mkdir()
    for name, text in (("spam", SPAM), ("answer", ANSWER), ("notes", NOTES), ("ladder", LADDER)):
        (pol / f"{name}.yaml").write_text(text, encoding="utf-8")
    stream = d / "events.jsonl"
    stream.write_text("".join(json.dumps(e) + "\n" for e in _events()), encoding="utf-8")
    db = d / "audit.db"
    p = tosengine("replay", str(stream), "--policies", str(pol), "--db", f"sqlite:///{db}", cwd=d)
    assert p.returncode == 0, p.stdout + p.stderr
    return db


def export(db: Path, subject: str, fmt: str) -> subprocess.CompletedProcess[str]:
    return tosengine("audit", "export", "--subject", subject, "--format", fmt, "--db", f"sqlite:///{db}")


@pytest.fixture(scope="module")
def case_json(case_db: Path) -> dict[str, Any]:
    p = export(case_db, SUBJECT, "json")
    assert p.returncode == 0, p.stderr
    data: dict[str, Any] = json.loads(p.stdout)
    return data


@pytest.fixture(scope="module")
def case_html(case_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = export(case_db, SUBJECT, "html")
    assert p.returncode == 0, p.stderr
    path = tmp_path_factory.mktemp("html") / "case.html"
    path.write_text(p.stdout, encoding="utf-8")
    return path


class Page(HTMLParser):
    """What a reader sees of a page: its text (not the style sheet), its elements and their attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self._skip = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def tags(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag]

    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.elements if "id" in a]


def _violation_ids(page: Page) -> list[str]:
    return [a["id"][2:] for a in page.tags("section") if a.get("id", "").startswith("v-")]


# --- without a browser -------------------------------------------------------------------------------


def test_the_json_case_file_has_the_header_timeline_violations_and_repeats(case_json: dict[str, Any]) -> None:
    c = case_json
    assert c["subject"] == SUBJECT and c["engine_version"] == __version__ and "UTC" in c["times"]
    produced = datetime.fromisoformat(c["produced_at"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - produced) < timedelta(minutes=5)
    assert c["chain"]["ok"] and "hash chain intact" in c["chain"]["result"]
    heads = {h["name"]: h for h in c["chain"]["heads"]}
    assert re.fullmatch(r"[0-9a-f]{64}", heads["violations"]["hash"]) and re.fullmatch(
        r"[0-9a-f]{64}", heads["repeats"]["hash"]
    )
    assert {(p["policy"], p["role"]) for p in c["policy_versions"]} == {
        ("spam", "violated"),
        ("answer", "violated"),
        ("notes", "violated"),
        ("ladder", "escalation ladder"),
    }
    assert all(p["version"].startswith("sha256:") and p["path"].endswith(".yaml") for p in c["policy_versions"])

    rules = [v["rule"] for v in c["violations"]]
    assert sorted(rules) == sorted(
        ["spam/flood", "spam/flood", "spam/flood", "answer/info-request-unanswered", "notes/silence-noted"]
    )
    times = [t["time"] for t in c["timeline"]]
    assert times == sorted(times) and len(c["timeline"]) == len(c["violations"]) + len(c["repeats"])

    first = next(v for v in c["violations"] if v["evidence"] == ["p0"])
    assert first["title"] == "No flooding" and first["clause_ref"] == "https://example.com/terms#spam"
    x = first["explanation"]
    assert x["rule_kind"] == "match" and x["conditions"][0]["text"].startswith('event.type == "post.created"')
    assert {"path": "data.copies", "value": 50} in x["evidence"][0]["fields"]
    assert x["evidence"][0]["source"] == "test/posts"
    assert x["ladder"]["step"] == 1 and "1st counted violation within 365d" in x["ladder"]["meaning"]
    assert "at least as warn" in x["ladder"]["meaning"]
    [rep] = first["repeats"]
    assert rep["count"] == SUPPRESSED and len(rep["evidence"]) == SUPPRESSED
    assert rep["summary"] == f"and {SUPPRESSED} more times between {_at(timedelta(hours=1))} and " + _at(
        timedelta(hours=1) + (SUPPRESSED - 1) * timedelta(minutes=10)
    )
    assert {"path": "data.copies", "value": 50} in rep["evidence_table"][0]["fields"]

    expect = next(v for v in c["violations"] if v["rule"] == "answer/info-request-unanswered")
    assert expect["explanation"]["deadline"] == _at(timedelta(days=2, hours=12))
    assert "passed with no fulfilling item" in expect["explanation"]["fulfilment"]
    assert (
        expect["explanation"]["ladder"]["step"] == 3
        and "at least as disable" in expect["explanation"]["ladder"]["meaning"]
    )
    noted = next(v for v in c["violations"] if v["rule"] == "notes/silence-noted")
    assert [f["anchor"] for f in noted["explanation"]["facts"]] == [f"v-{expect['id']}"]
    assert "does not climb the ladder" in noted["explanation"]["ladder"]["meaning"]


def test_html_and_json_carry_the_same_violations_and_repeats(case_json: dict[str, Any], case_html: Path) -> None:
    page = Page(case_html.read_text(encoding="utf-8"))
    assert _violation_ids(page) == [v["id"] for v in case_json["violations"]]
    repeat_ids = [a["id"][2:] for a in page.tags("div") if a.get("id", "").startswith("r-")]
    assert repeat_ids == [r["id"] for r in case_json["repeats"]] and len(repeat_ids) == 2
    for r in case_json["repeats"]:
        assert r["summary"] in page.text
    assert "and 1 more time between" in page.text


def test_the_html_is_self_contained_and_escapes_what_users_control(case_db: Path) -> None:
    p = export(case_db, HOSTILE, "html")
    assert p.returncode == 0, p.stderr
    page = Page(p.stdout)
    assert not page.tags("script") and not page.tags("img") and not page.tags("link")
    assert all(not a.get("src") and not a.get("onerror") for _, a in page.elements)
    # Only links inside the page, and the policies' clause references.
    hrefs = [a["href"] for a in page.tags("a")]
    assert hrefs and all(h.startswith("#") or h.startswith("https://example.com/") for h in hrefs)
    # The hostile text is there to read, as text.
    assert PWN.format("subject") in page.text and PWN.format("event") in page.text
    assert "&lt;script&gt;" in p.stdout


def test_an_unknown_subject_exits_1_with_a_did_you_mean_and_prints_nothing(case_db: Path) -> None:
    for fmt in ("json", "html"):
        p = export(case_db, "account:spamer", fmt)
        assert p.returncode == 1 and p.stdout == ""
        assert "account:spamer" in p.stderr and "did you mean 'account:spammer'" in p.stderr
        assert "Traceback" not in p.stderr
    p = export(case_db, "nobody:x", "json")
    assert p.returncode == 1 and p.stdout == "" and "did you mean" in p.stderr


def test_export_leaves_the_database_as_it_was(case_db: Path) -> None:
    before = hashlib.sha256(case_db.read_bytes()).hexdigest()
    assert export(case_db, SUBJECT, "html").returncode == 0
    assert hashlib.sha256(case_db.read_bytes()).hexdigest() == before


def test_a_broken_chain_is_stated_in_the_header(case_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tampered.db"
    shutil.copy(case_db, copy)
    with sqlite3.connect(copy) as c:
        c.execute("DROP TRIGGER violations_no_update")
        c.execute("UPDATE violations SET message = 'nothing happened' WHERE seq = 1")
    c.close()
    p = export(copy, SUBJECT, "html")
    assert p.returncode == 0, p.stderr
    text = Page(p.stdout).text
    assert "chain check BROKEN" in text and "changed after it was written" in text
    assert json.loads(export(copy, SUBJECT, "json").stdout)["chain"]["ok"] is False


# --- in a real browser -------------------------------------------------------------------------------


def _chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if exe is None:
        pytest.skip(
            "the case file's browser test needs Chromium: chromium is not installed (apt-get install -y chromium)"
        )
    return exe


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a throwaway profile and nothing that talks to the network on its own."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_chromium_renders_the_case_file(case_json: dict[str, Any], case_html: Path, tmp_path: Path) -> None:
    p = chromium(tmp_path, "--dump-dom", case_html.as_uri())
    assert p.returncode == 0 and "<body" in p.stdout, p.stderr[-2000:]
    page = Page(p.stdout)
    text = page.text
    assert f"Case file: {SUBJECT}" in text and "All times are UTC" in text
    assert f"tosengine {__version__}" in text and "chain check ok" in text and "hash chain intact" in text
    for h in case_json["chain"]["heads"]:
        assert h["hash"] in text
    for pv in case_json["policy_versions"]:
        assert pv["version"] in text and pv["path"] in text
    headings = [a for a in page.tags("h2")]
    assert len(headings) >= 2 + len(case_json["violations"])
    ids = page.ids()
    assert {"header", "timeline", "policy-texts"} <= set(ids)
    assert _violation_ids(page) == [v["id"] for v in case_json["violations"]]
    # Every in-page link lands on something in the page.
    targets = [a["href"][1:] for a in page.tags("a") if a["href"].startswith("#")]
    assert targets and set(targets) <= set(ids)
    # Per violation: title, clause with its reference, condition, ladder, evidence before the raw events.
    assert "No flooding" in text and "You will not flood other people with posts." in text
    assert 'event.type == "post.created" and event.data.copies > 10' in text
    assert "Escalation ladder step 2:" in text and "2nd counted violation within 365d" in text
    assert "Deadline: " + _at(timedelta(days=2, hours=12)) in text
    assert any(a["href"] == "https://example.com/terms#spam" for a in page.tags("a"))
    html = p.stdout
    first = case_json["violations"][0]
    section = html[html.index(f'id="v-{first["id"]}"') :]
    assert section.index("fields the rule read") < section.index("<details")
    assert f"and {SUPPRESSED} more times between" in text
    # The raw events are collapsed.
    assert page.tags("details") and not any("open" in a for a in page.tags("details"))


def test_chromium_does_not_run_anything_from_the_data(case_db: Path, tmp_path: Path) -> None:
    p = export(case_db, HOSTILE, "html")
    assert p.returncode == 0, p.stderr
    path = tmp_path / "hostile.html"
    path.write_text(p.stdout, encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", path.as_uri())
    assert dom.returncode == 0 and "<body" in dom.stdout, dom.stderr[-2000:]
    page = Page(dom.stdout)
    # Had a script run, <html> would carry its attribute; had markup got through, there would be elements.
    assert all("data-pwned" not in a for _, a in page.elements)
    assert not page.tags("script") and not page.tags("img")
    assert PWN.format("event") in page.text


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def test_chromium_prints_a_long_case_on_several_pages(
    case_json: dict[str, Any], case_html: Path, tmp_path: Path
) -> None:
    pdf = tmp_path / "case.pdf"
    p = chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", case_html.as_uri())
    assert p.returncode == 0 and pdf.exists(), p.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    # The header, then each violation from a new page.
    assert _pages(data) > len(case_json["violations"]) > 1
