"""The main job's data: every abusive subject of the seed cases is caught by the right policy, and no
benign subject has any violation."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from tosengine import Engine, Violation
from tosengine.event_model import parse_event_line

ROOT = Path(__file__).resolve().parents[1]

# What the generator (examples/generate.py) stages, and which policy must catch it.
EXPECTED = {
    "operator:mgp25": {
        "fake-engagement/operator-bot-network",
        "cease-and-desist/notice-ignored",
        "investigation-cooperation/info-request-unanswered",
    },
    **{
        f"account:mgp25-bot-{i}": {"fake-engagement/spoofed-official-client", "fake-engagement/engagement-burst"}
        for i in range(6)
    },
    # Ban evasion is recorded against the account that came back, not the device it came back on.
    **{
        f"account:mgp25-new-{i}": {
            "fake-engagement/spoofed-official-client",
            "ban-evasion/new-account-on-disabled-device",
        }
        for i in range(3)
    },
    "origin:massroot8.example": {"credential-harvesting/third-party-login-ring"},
    "developer:massroot8": {
        "unauthorized-data-collection/no-consent",
        "cease-and-desist/notice-ignored",
        "investigation-cooperation/info-request-unanswered",
    },
    "developer:oneaudience": {"unauthorized-data-collection/no-consent", "unauthorized-data-collection/unapproved-sdk"},
}


@pytest.fixture(scope="module")
def violations() -> list[Violation]:
    with Engine.from_directory(ROOT / "policies") as engine:
        return [
            v
            for line in (ROOT / "examples" / "seed-cases.jsonl").read_text(encoding="utf-8").splitlines()
            for v in engine.process(parse_event_line(line))
        ]


@pytest.fixture(scope="module")
def by_subject(violations: list[Violation]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for v in violations:
        out[v.subject].add(v.rule)
    return out


def test_every_subject_is_kind_colon_id(violations: list[Violation]) -> None:
    assert {v.subject for v in violations if not re.fullmatch(r"[a-z][a-z0-9_.-]*:.+", v.subject)} == set()


def test_at_most_one_spoofed_client_violation_per_account_per_day(violations: list[Violation]) -> None:
    spoofed = sorted((v.subject, v.time) for v in violations if v.rule == "fake-engagement/spoofed-official-client")
    assert spoofed, "the seed's bots are caught"
    for (a, t1), (b, t2) in itertools.pairwise(spoofed):
        assert a != b or t2 - t1 >= timedelta(days=1), (a, t1, t2)


@pytest.mark.parametrize("subject", sorted(EXPECTED))
def test_each_abusive_subject_is_caught_by_the_right_policies(by_subject: dict[str, set[str]], subject: str) -> None:
    assert EXPECTED[subject] <= by_subject[subject]
    # Besides the expected rules, only escalation may add to a subject's record.
    assert {r for r in by_subject[subject] - EXPECTED[subject] if not r.startswith("escalation/")} == set()


def test_no_benign_subject_has_a_violation(by_subject: dict[str, set[str]]) -> None:
    benign = {s for s in by_subject if re.fullmatch(r"account:\d+|developer:good-\d+|account:m8-victim-\d+", s)}
    assert benign == set()
    assert set(by_subject) == set(EXPECTED)


def test_the_seed_file_is_what_the_generator_makes() -> None:
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "generate.py")], capture_output=True, text=True, check=True
    )
    assert p.stdout == (ROOT / "examples" / "seed-cases.jsonl").read_text(encoding="utf-8")


def test_main_job_summary(tmp_path: Path) -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tosengine",
            "replay",
            str(ROOT / "examples" / "seed-cases.jsonl"),
            "--policies",
            str(ROOT / "policies"),
            "--summary",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "legal_referral  developer:massroot8, operator:mgp25" in p.stdout
    assert "tosengine audit export --subject operator:mgp25 --format html" in p.stdout
    assert (tmp_path / "tosengine.db").exists()
