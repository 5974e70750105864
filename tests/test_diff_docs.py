"""docs/lifecycle.md runs as written: its files are written, its commands run, their output is what it shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "lifecycle.md"
# A fenced block, with the file it is (a "`path`:" line before it) if it is one.
BLOCK = re.compile(r"(?:^`(?P<path>[^`\n]+)`:\n\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.S | re.M)


def test_every_command_in_the_lifecycle_doc_prints_what_it_shows(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    blocks = list(BLOCK.finditer(DOC.read_text(encoding="utf-8")))
    ran = 0
    for i, m in enumerate(blocks):
        if m["path"]:
            target = tmp_path / m["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(m["body"], encoding="utf-8")
            continue
        shown = blocks[i + 1] if i + 1 < len(blocks) else None
        if m["lang"] != "sh" or shown is None or shown["lang"] != "text" or shown["path"]:
            continue
        (command,) = m["body"].strip().splitlines()
        argv = shlex.split(command)
        assert argv[0] == "tosengine"
        p = subprocess.run(
            [sys.executable, "-m", "tosengine", *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert "Traceback" not in p.stderr, p.stderr
        assert p.stdout == shown["body"], f"`{command}` printed:\n{p.stdout}"
        ran += 1
    assert ran >= 6  # check, rules, test twice, diff, eval
