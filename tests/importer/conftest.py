"""Fixtures: a writable copy of a sample export to corrupt one thing in."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.importer.helpers import SAMPLES, dump, load


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A writable copy of the 20.1224 sample, to corrupt one thing in."""
    target = tmp_path / "export"
    shutil.copytree(SAMPLES / "mids-20.1224", target)
    return target


@pytest.fixture
def edit_json(sample: Path) -> Callable[[str, Callable[[Any], Any]], None]:
    """Rewrite one file of the sample through a function of its parsed JSON."""

    def edit(rel: str, change: Callable[[Any], Any]) -> None:
        path = sample / rel
        value = load(path)
        result = change(value)
        dump(value if result is None else result, path)

    return edit
