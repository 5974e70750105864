"""Stage match: an item's projection -> the ids of the triggers whose pushed conditions hold.

This is the only module of the engine that imports durable_rules (the load-time smoke test's child,
runtime/smoke_child.py, does too, in its own process). How each defect of durable_rules 2.0.28
(../shared/durable_rules/FINDINGS.md) is made unreachable:

* 1,024 sessions per ruleset, 85 KB-2.3 MB each, sid hash collisions: every message goes to the
  single session "0"; partition keys never reach durable_rules (state by key lives in Python).
* Events consumed by the first rule that fires: items are asserted as *facts*, which fire every
  matching rule, and retracted straight after, so nothing accumulates (bounded memory).
* 32-bit FNV-1a message ids: the only ids ever used are "m0".."m255", the places in a batch, whose
  hashes are checked to be distinct when this module is imported; every batch is retracted before
  the next, so no other message is live. Event ids never reach durable_rules.
* Broken `$not`, joins, 16-frame rules, count/cap: the compiler emits one-element rules only.
* 252-property, string-size and encoding limits, loose typing: messages are projections holding
  only short ASCII codes chosen by the compiler (see tosengine/policy/compile.py).
* >64 alpha nodes per message (error 303), >=513 rules (hang): bounded by the compiler's budgets.
* Wall-clock timers and the Host's background threads: no Host is created and no timer is used;
  time is event time, handled in Python.
* Exceptions swallowed inside actions: no Python action runs inside durable_rules; the rules fired
  are read back from the engine's result, and every status but 0 (matched) and 1 (some message
  matched nothing) raises MatcherError.
* The fixed 4,096-action table per state: a batch holds at most 4,096 / (triggers in the ruleset)
  messages, each of which can fire each trigger once.
* No thread safety: every call into durable_rules, from any matcher, is made under one lock (a
  ruleset taken over on reload is used by the old matcher and the new one).

Because every message is a fact retracted after its batch and every rule has one element, what an item
fires is a function of its projection alone. A projection holds a few compiler-chosen codes per
property, so a stream repeats a small set of them: each ruleset remembers what a projection fired
(`_Ruleset.memo`) and sends durable_rules only the projections it has not seen.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
from typing import Any

import durable_rules_engine as _dre

from tosengine.errors import MatcherError
from tosengine.policy.compile import Plan, RulesetPlan
from tosengine.policy.model import ItemKind
from tosengine.runtime.evaluate import MISSING, lookup

__all__ = ["Matcher"]

_MESSAGE_ID = "m"
_SID = "0"
# A batch is at most BATCH items, and at most _MAX_ACTIONS actions (durable_rules' fixed action table
# holds 4096 per state; every item can fire each trigger of a ruleset once).
BATCH = 256
# Projections whose matches a ruleset remembers (_Ruleset.memo).
MEMO = 4096
_MAX_ACTIONS = 4096
_BATCH_IDS = [f"m{i}" for i in range(BATCH)]
_BATCH_HEADS = [f'{{"id":"{i}","sid":"0","k":"1"' for i in _BATCH_IDS]  # how each message starts
_RETRACT_ITEMS = [json.dumps({"id": i, "sid": _SID}) for i in _BATCH_IDS]
# A batch action's payload starts {"t<trigger>":{"m":{"id": "m<index>", ...: which item fired what.
_BATCH_NAME = re.compile(r'\{\s*"(t\d+)"\s*:\s*\{\s*"m"\s*:\s*\{\s*"id"\s*:\s*"m(\d+)"')


@functools.cache
def _retract(n: int) -> str:
    """The retraction of messages m0 .. m<n-1>, as json.dumps writes the list. Built on first use: all 257
    of them at import took 20-50 ms, a tenth of the CLI's start-up."""
    return "[" + ", ".join(_RETRACT_ITEMS[:n]) + "]"


def _fnv1a32(s: str) -> int:
    """durable_rules' message id hash (state.c), for the collision check below."""
    h = 0x811C9DC5
    for b in s.encode("ascii"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


# durable_rules tells messages apart by this 32-bit hash alone: two live ids must never share one.
if len({_fnv1a32(i) for i in _BATCH_IDS}) != BATCH:  # pragma: no cover - fixed ids
    raise ImportError("tosengine's durable_rules message ids collide under FNV-1a")
# durable_rules is not thread-safe, and matchers share rulesets across a reload: one lock for all calls.
_LOCK = threading.Lock()
_WARM_UP = '{"id":"m0","sid":"0","k":"0"}'  # every condition requires k == "1": matches nothing
_OK, _NOT_HANDLED = 0, 1


class _Ruleset:
    """One created durable_rules ruleset, how to project an item for it, and what its projections fired."""

    def __init__(self, plan: RulesetPlan) -> None:
        self.plan = plan
        self.handle: int | None = _dre.create_ruleset(plan.name, json.dumps(plan.definition))
        self.trigger_of = {f"t{t}": t for t in plan.triggers}
        self.props = [p.prop for p in plan.projections]  # the message's property names, in order
        self.projections = [(p.parts, dict(p.codes)) for p in plan.projections]  # what each one reads
        self.batch = min(BATCH, _MAX_ACTIONS // max(1, len(plan.triggers)))
        # The triggers each projection fired, by its codes. Matching is a function of the projection
        # alone (every message is a fact retracted after its batch, and every rule has one element),
        # and a projection holds only the compiler's few codes per property: a stream repeats a small
        # set of them, which durable_rules then matches once instead of once per item.
        self.memo: dict[tuple[str, ...], tuple[int, ...]] = {}
        self.memo_limit = MEMO  # per ruleset: a test shrinks it on the matcher it holds
        self.asserted = 0  # messages durable_rules has matched: what the memo did not answer

    def codes(self, fields: dict[str, Any]) -> tuple[str, ...]:
        """The item's projection: each property's code (the constant matched, $T, $A or $O)."""
        out = []
        for path, codes in self.projections:
            v = lookup(fields, path)
            if v is True:
                out.append("$T")
            elif v is MISSING:
                out.append("$A")
            elif type(v) is str:
                out.append(codes.get(v, "$O"))
            else:
                out.append("$O")
        return tuple(out)

    def message(self, codes: tuple[str, ...], head: str = _BATCH_HEADS[0]) -> str:
        """The JSON message of a projection: built by hand, since every value is a short ASCII code."""
        return head + "".join([f',"{prop}":"{code}"' for prop, code in zip(self.props, codes, strict=True)]) + "}"

    def project(self, fields: dict[str, Any], head: str = _BATCH_HEADS[0]) -> str:
        """The JSON message for this item."""
        return self.message(self.codes(fields), head)

    def remember(self, codes: tuple[str, ...], fired: tuple[int, ...]) -> None:
        """Keep what a projection fired, within `memo_limit` projections (then start again: a stream whose
        projections are that varied gains little from it)."""
        if len(self.memo) >= self.memo_limit:
            self.memo.clear()
        self.memo[codes] = fired


def _identity(plan: RulesetPlan) -> str:
    """What makes two rulesets interchangeable: the same kind, type, triggers, definition and projections."""
    return json.dumps(
        [
            plan.kind,
            plan.type,
            list(plan.triggers),
            plan.definition,
            [[p.prop, list(p.parts), [list(c) for c in p.codes]] for p in plan.projections],
        ],
        sort_keys=True,
    )


class Matcher:
    """Pre-selects triggers with durable_rules. Safe to call from several threads."""

    def __init__(self, plan: Plan, *, reuse: Matcher | None = None) -> None:
        """Create the plan's rulesets; with `reuse` (the matcher of the policies being replaced), take over
        its rulesets whose definition is the same instead of creating them again: durable_rules does not
        give back all the memory of a ruleset it deletes, so a reload of unchanged rules must not churn."""
        self._rulesets: list[_Ruleset] = []
        self._given: set[int] = set()  # ids of rulesets a newer matcher took over: not deleted by close()
        spare = reuse._spare() if reuse is not None else {}
        try:
            with _LOCK:
                for rp in plan.rulesets:
                    taken = spare.pop(_identity(rp), None)
                    if taken is not None:
                        assert reuse is not None
                        reuse._given.add(id(taken))
                        self._rulesets.append(taken)
                        continue  # warmed up already; and the old matcher may still be in use: no call here
                    rs = _Ruleset(rp)
                    self._rulesets.append(rs)
                    # Create the session now: durable_rules spends ~100 us building it on the first message,
                    # which would otherwise land on some unlucky event's latency.
                    if self._assert(rs, [_WARM_UP]):
                        raise MatcherError("a rule fired for the warm-up message, which no rule can match")
        except (_dre.error, MatcherError) as exc:
            if reuse is not None:  # give back what was taken over: the old matcher still runs on it
                taken_back = [rs for rs in self._rulesets if id(rs) in reuse._given]
                reuse._given.difference_update(id(rs) for rs in taken_back)
                self._rulesets = [rs for rs in self._rulesets if rs not in taken_back]
            self.close()
            raise MatcherError(f"durable_rules refused a compiled ruleset: {exc}") from exc
        self._by_type: dict[tuple[ItemKind, str], list[_Ruleset]] = {}
        self._any: dict[ItemKind, list[_Ruleset]] = {"event": [], "fact": []}
        for rs in self._rulesets:
            if rs.plan.type is None:
                self._any[rs.plan.kind].append(rs)
            else:
                self._by_type.setdefault((rs.plan.kind, rs.plan.type), []).append(rs)

    def rulesets_for(self, kind: ItemKind, item_type: Any) -> list[_Ruleset]:
        """The rulesets an item of this kind and type must be offered to."""
        typed = self._by_type.get((kind, item_type), []) if type(item_type) is str else []
        return typed + self._any[kind] if typed else self._any[kind]

    def match(self, kind: ItemKind, fields: dict[str, Any]) -> list[int]:
        """Ids of the triggers whose pushed conditions hold for this item, ascending."""
        return self.match_many(kind, [fields])[0]

    def match_many(self, kind: ItemKind, items: list[dict[str, Any]]) -> list[list[int]]:
        """match() of each item. A projection a ruleset has matched before is answered from its memo; the
        others go to durable_rules, each distinct one once, in one call per ruleset and batch."""
        fired: list[list[int]] = [[] for _ in items]
        pending: dict[int, tuple[_Ruleset, dict[tuple[str, ...], list[int]]]] = {}
        for i, fields in enumerate(items):
            for rs in self.rulesets_for(kind, fields.get("type")):
                codes = rs.codes(fields)
                known = rs.memo.get(codes)
                if known is None:
                    pending.setdefault(id(rs), (rs, {}))[1].setdefault(codes, []).append(i)
                elif known:
                    fired[i].extend(known)
        if pending:
            with _LOCK:
                for rs, waiting in pending.values():
                    distinct = list(waiting)
                    for start in range(0, len(distinct), rs.batch):
                        chunk = distinct[start : start + rs.batch]
                        got: list[list[int]] = [[] for _ in chunk]
                        for j, tid in self._assert(rs, [rs.message(c, _BATCH_HEADS[j]) for j, c in enumerate(chunk)]):
                            got[j].append(tid)
                        for codes, tids in zip(chunk, got, strict=True):
                            rs.remember(codes, tuple(tids))
                            if tids:
                                for i in waiting[codes]:
                                    fired[i].extend(tids)
        # Most items fire one trigger or none: only the others need sorting (and, defensively, deduping).
        return [f if len(f) < 2 else sorted(set(f)) for f in fired]

    def _assert(self, rs: _Ruleset, messages: list[str]) -> list[tuple[int, int]]:
        """Assert messages m0, m1, ... as facts, and retract them all (even after a failure, so the next
        batch can reuse the ids); (message index, trigger id) for each rule that fired."""
        out: list[tuple[int, int]] = []
        handle = rs.handle
        if handle is None:
            raise MatcherError("the matcher is closed")
        rs.asserted += len(messages)
        try:
            try:
                status, state = _dre.assert_facts(handle, "[" + ",".join(messages) + "]")
                # Status 1 means some message matched nothing; the others' actions are queued all the same.
                if status not in (_OK, _NOT_HANDLED):
                    raise MatcherError(f"durable_rules returned status {status} asserting into {rs.plan.name}")
                result = _dre.start_action_for_state(handle, state)
                while result:
                    payload = result[1] if isinstance(result, tuple) else result
                    m = _BATCH_NAME.match(payload)
                    if m is None:
                        raise MatcherError(f"unexpected action payload from durable_rules: {payload[:200]}")
                    out.append((int(m[2]), rs.trigger_of[m[1]]))
                    result = _dre.complete_and_start_action(handle, state)
            finally:
                _dre.retract_facts(handle, _retract(len(messages)))
        except _dre.error as exc:
            raise MatcherError(f"durable_rules failed in {rs.plan.name}: {exc}") from exc
        except KeyError as exc:
            raise MatcherError(f"durable_rules fired an unknown rule {exc} in {rs.plan.name}") from exc
        return out

    def _spare(self) -> dict[str, _Ruleset]:
        """This matcher's rulesets not yet taken over, by what they are."""
        return {_identity(rs.plan): rs for rs in self._rulesets if rs.handle is not None and id(rs) not in self._given}

    def close(self) -> None:
        """Free the durable_rules rulesets (but those a newer matcher took over); the matcher cannot be
        used afterwards (not even for projections it has seen: their memo goes too)."""
        with _LOCK:
            for rs in self._rulesets:
                if id(rs) in self._given:
                    continue
                rs.memo.clear()
                if rs.handle is not None:
                    # Nothing more can be done for a handle the engine no longer knows.
                    with contextlib.suppress(_dre.error):
                        _dre.delete_ruleset(rs.handle)
                    rs.handle = None


# ---------------------------------------------------------------- smoke test (runs in a subprocess)


def _satisfy(cond: dict[str, Any], msg: dict[str, str]) -> None:
    """Fill `msg` so that it meets `cond` (first branch of an `$or`)."""
    for key, value in cond.items():
        if key == "$and":
            for c in value:
                _satisfy(c, msg)
        elif key == "$or":
            _satisfy(value[0], msg)
        elif key == "$neq":
            ((prop, code),) = value.items()
            msg.setdefault(prop, "$O" if code != "$O" else "$A")
        else:
            msg.setdefault(key, value)


def _holds(cond: dict[str, Any], msg: dict[str, str]) -> bool:
    for key, value in cond.items():
        if key == "$and" and not all(_holds(c, msg) for c in value):
            return False
        if key == "$or" and not any(_holds(c, msg) for c in value):
            return False
        if key == "$neq" and all(msg.get(p) == c for p, c in value.items()):
            return False
        if not key.startswith("$") and msg.get(key) != value:
            return False
    return True


def probes(plan: RulesetPlan) -> list[tuple[dict[str, str], str | None]]:
    """For each trigger of a ruleset: a message meeting its conditions, and the rule that must fire."""
    out: list[tuple[dict[str, str], str | None]] = []
    for name, rule in plan.definition.items():
        cond = rule["all"][0]["m"]
        msg: dict[str, str] = {"id": _MESSAGE_ID, "sid": _SID}
        _satisfy(cond, msg)
        out.append((msg, name if _holds(cond, msg) else None))
    return out
