"""Deterministic generator of realistic event streams: the seed cases among benign traffic.

    python examples/generate.py --seed 7 > examples/seed-cases.jsonl
    python examples/generate.py --accounts 100000 --events 1000000 --abuse-rate 0.01 > big.jsonl

The seed cases, modelled on Facebook's 2020 actions:
* operator:mgp25 sells likes through bot accounts posing as the official Instagram app, ignores a
  cease-and-desist, and comes back on new accounts from the devices of its disabled ones;
* massroot8.example collects users' Facebook logins on its site; developer:massroot8 pulls user data
  without consent, ignores an information request and a cease-and-desist;
* developer:oneaudience collects user data through an SDK that was never approved.
Everything else is benign: attested official clients at human rates, first-party logins, developers
with consent who answer information requests on time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 3, 2, tzinfo=UTC)
OFFICIAL = ["instagram-android", "instagram-ios", "instagram-web", "facebook-android", "facebook-ios", "facebook-web"]
FIRST_PARTY = ["facebook.com", "instagram.com", "m.facebook.com", "www.instagram.com"]
ACTIONS = ["like", "comment", "follow"]


class Stream:
    """Collects events and writes them sorted by time (ties keep creation order)."""

    def __init__(self) -> None:
        self.events: list[tuple[datetime, int, dict[str, Any]]] = []

    def add(self, when: datetime, etype: str, subject: str, **data: Any) -> None:
        n = len(self.events)
        ev = {
            "specversion": "1.0",
            "id": f"ev-{n:07d}",
            "source": "example/generator",
            "type": etype,
            "time": when.isoformat().replace("+00:00", "Z"),
            "subject": subject,
            "data": data,
        }
        self.events.append((when, n, ev))

    def lines(self) -> Iterator[str]:
        for _, _, ev in sorted(self.events, key=lambda x: (x[0], x[1])):
            yield json.dumps(ev, separators=(",", ":"))


def benign(s: Stream, rng: random.Random, accounts: int, events: int, days: int) -> None:
    """Human-paced engagement, logins and views by `accounts` accounts; developers who behave."""
    span = days * 86400
    for _ in range(events):
        a = f"account:{rng.randrange(accounts)}"
        when = START + timedelta(seconds=rng.randrange(span))
        r = rng.random()
        if r < 0.6:
            s.add(
                when,
                "account.engagement",
                a,
                action=rng.choice(ACTIONS),
                target=f"post:{rng.randrange(10**6)}",
                client={"name": rng.choice(OFFICIAL), "attested": True},
            )
        elif r < 0.8:
            s.add(
                when,
                "account.login",
                a,
                origin=rng.choice(FIRST_PARTY),
                ip=f"10.{rng.randrange(256)}.0.1",
                device_id=f"device:{a.split(':')[1]}",
            )
        else:
            s.add(
                when,
                "account.profile_view",
                a,
                target=f"account:{rng.randrange(accounts)}",
                client={"name": rng.choice(OFFICIAL), "attested": True},
            )
    for d in range(3):
        dev = f"developer:good-{d}"
        for k in range(5):
            s.add(
                START + timedelta(days=k, hours=d),
                "developer.data_access",
                dev,
                app_id=f"app-{d}",
                sdk="facebook-android-sdk",
                fields=["public_profile"],
                user_consent=True,
            )
        s.add(START + timedelta(days=1, hours=d), "enforcement.info_request", dev, case_id=f"CASE-G{d}", due_days=14)
        s.add(START + timedelta(days=5, hours=d), "developer.info_response", dev, case_id=f"CASE-G{d}")


def mgp25(s: Stream, rng: random.Random, bots: int = 6) -> None:
    """Bots posing as instagram-android; a notice; disabled accounts; new accounts on the same devices."""
    op = "operator:mgp25"
    for b in range(bots):
        acct, dev = f"account:mgp25-bot-{b}", f"device:mgp25-{b}"
        s.add(START + timedelta(hours=1, minutes=b), "account.created", acct, device_id=dev, ip="203.0.113.7")
        for burst in range(2):
            base = START + timedelta(days=burst, hours=2, minutes=b)
            for k in range(80):
                s.add(
                    base + timedelta(seconds=6 * k),
                    "account.engagement",
                    acct,
                    action="like",
                    target=f"post:{rng.randrange(10**6)}",
                    client={"name": "instagram-android", "attested": False},
                    operator=op,
                )
    s.add(
        START + timedelta(days=3),
        "enforcement.cease_and_desist",
        op,
        case_id="CD-MGP25",
        due_days=7,
        conduct=["fake-engagement"],
    )
    s.add(START + timedelta(days=3), "enforcement.info_request", op, case_id="IR-MGP25", due_days=14)
    for b in range(bots):
        s.add(
            START + timedelta(days=4),
            "enforcement.account_disabled",
            f"account:mgp25-bot-{b}",
            device_id=f"device:mgp25-{b}",
            reason="fake-engagement",
            operator=op,
        )
    for b in range(3):  # after the due date: new accounts on the disabled devices, same business
        acct, dev = f"account:mgp25-new-{b}", f"device:mgp25-{b}"
        s.add(START + timedelta(days=12, minutes=b), "account.created", acct, device_id=dev, ip="203.0.113.9")
        base = START + timedelta(days=12, hours=1, minutes=b)
        for k in range(20):
            s.add(
                base + timedelta(seconds=30 * k),
                "account.engagement",
                acct,
                action="follow",
                target=f"account:{rng.randrange(10**6)}",
                client={"name": "instagram-ios", "attested": False},
                operator=op,
            )


def massroot8(s: Stream, rng: random.Random, victims: int = 12) -> None:
    """Users enter their Facebook logins on massroot8.example; its app pulls data without consent."""
    dev = "developer:massroot8"
    for v in range(victims):
        s.add(
            START + timedelta(days=1, hours=9, minutes=7 * v),
            "account.login",
            f"account:m8-victim-{v}",
            origin="massroot8.example",
            ip="198.51.100.23",
            device_id="device:m8-server",
        )
    for k in range(4):
        s.add(
            START + timedelta(days=1, hours=12 + k),
            "developer.data_access",
            dev,
            app_id="app-m8",
            fields=["friends", "photos"],
            user_consent=False,
        )
    s.add(START + timedelta(days=2), "enforcement.info_request", dev, case_id="IR-M8", due_days=7)
    s.add(
        START + timedelta(days=2),
        "enforcement.cease_and_desist",
        dev,
        case_id="CD-M8",
        due_days=5,
        conduct=["unauthorized-data-collection"],
    )
    s.add(
        START + timedelta(days=9), "developer.data_access", dev, app_id="app-m8", fields=["friends"], user_consent=False
    )


def oneaudience(s: Stream) -> None:
    """An SDK that was never approved, collecting without consent."""
    dev = "developer:oneaudience"
    s.add(
        START + timedelta(days=1, hours=3),
        "developer.data_access",
        dev,
        app_id="app-oa",
        sdk="oneaudience-sdk",
        fields=["email", "gender"],
        user_consent=False,
    )
    s.add(START + timedelta(days=1, hours=4), "enforcement.info_request", dev, case_id="IR-OA", due_days=10)
    s.add(START + timedelta(days=4), "developer.info_response", dev, case_id="IR-OA")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--accounts", type=int, default=400, help="benign accounts")
    p.add_argument("--events", type=int, default=2500, help="benign events")
    p.add_argument("--days", type=int, default=20, help="days the benign traffic spans")
    p.add_argument(
        "--abuse-rate",
        type=float,
        default=None,
        help="repeat the seed cases to make about this fraction of all events abusive",
    )
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    s = Stream()
    benign(s, rng, args.accounts, args.events, args.days)
    copies = 1 if args.abuse_rate is None else max(1, round(args.events * args.abuse_rate / 1000))
    for _ in range(copies):
        mgp25(s, rng)
        massroot8(s, rng)
        oneaudience(s)
    out = sys.stdout
    for line in s.lines():
        out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
