"""Stage check (lifecycle fields): `mode`, `enabled` and `tags` of policies and rules -> the drafts.

How a rule is rolled out, apart from what it matches: `mode: shadow` records its violations as shadow
(acted on by no one), `enabled: false` keeps it in the file but out of the engine, and `tags` label it
for the `--tag` filters of `replay`, `diff`, `rules` and `audit list`.
"""

from __future__ import annotations

import re
from typing import Any

from tosengine.policy.context import FileContext
from tosengine.policy.drafts import PolicyDraft, RuleDraft
from tosengine.policy.fields import TAG_PATTERN
from tosengine.policy.model import MODES
from tosengine.policy.yaml import Key

__all__ = ["check_policy_lifecycle", "option_enabled", "option_mode", "option_tags"]

_TAG = re.compile(TAG_PATTERN)


def _tags(ctx: FileContext, path: Key) -> tuple[str, ...] | None:
    """A list of distinct tags (lowercase words joined by - . _ or :), or None (reported)."""
    raw = ctx.raw(path)
    if not isinstance(raw, list):
        ctx.error(ctx.at(path), "invalid-value", "`tags` is a list of tags: [experiment, team.integrity]")
        return None
    out: list[str] = []
    ok = True
    for n, t in enumerate(raw):
        if not isinstance(t, str) or not _TAG.fullmatch(t):
            ctx.error(
                ctx.at((*path, n)),
                "invalid-value",
                "a tag is lowercase letters and digits, words joined by - . _ or : (e.g. q3-rollout, team:integrity)",
            )
            ok = False
        elif t in out:
            ctx.error(ctx.at((*path, n)), "invalid-value", f"tag `{t}` is listed twice")
            ok = False
        else:
            out.append(t)
    return tuple(out) if ok else None


def check_policy_lifecycle(ctx: FileContext, draft: PolicyDraft) -> None:
    """The policy's `mode` and `tags`, which its rules inherit (a file pass, before the rules)."""
    draft.mode = ctx.choice(("mode",), MODES, "enforce")
    if "tags" in ctx.doc.value:
        draft.tags = _tags(ctx, ("tags",)) or ()


def option_mode(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`mode: enforce|shadow`: the rule's own, else its policy's."""
    rule.mode = ctx.choice((*base, "mode"), MODES, policy.mode)
    return "mode" not in raw or raw["mode"] in MODES


def option_enabled(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`enabled: false`: the rule is checked as usual but no engine runs it."""
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        ctx.error(ctx.at((*base, "enabled")), "invalid-value", "`enabled` is true or false")
        return False
    rule.enabled = enabled
    return True


def option_tags(ctx: FileContext, base: Key, raw: dict[str, Any], rule: RuleDraft, policy: PolicyDraft) -> bool:
    """`tags`: the rule's labels, after its policy's (a tag both give is listed once)."""
    own: tuple[str, ...] = ()
    if "tags" in raw:
        checked = _tags(ctx, (*base, "tags"))
        if checked is None:
            return False
        own = checked
    rule.tags = tuple(dict.fromkeys((*policy.tags, *own)))
    return True
