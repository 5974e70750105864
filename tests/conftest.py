"""Fixtures and options shared by the tests (helpers to import are in tests/support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import pg_schema


def pytest_addoption(parser: pytest.Parser) -> None:
    """`pytest --update-golden` rewrites the golden files instead of comparing with them."""
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*.txt from current output")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Any:
    """Compare text with tests/golden/<name>, or rewrite it under --update-golden."""
    from pathlib import Path

    update = request.config.getoption("--update-golden")

    def check(name: str, text: str) -> None:
        path = Path(__file__).parent / "golden" / name
        if update or not path.exists():
            path.write_text(text, encoding="utf-8")
            if not update:
                pytest.fail(f"golden file {path} did not exist; wrote it -- review and commit it")
        assert text == path.read_text(encoding="utf-8"), f"output differs from {path} (pytest --update-golden)"

    return check


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database: a SQLite file, or a new schema in the PostgreSQL test database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    with pg_schema() as url:
        yield url
