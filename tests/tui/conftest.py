"""Fixtures for the explore TUI: a deterministic fake service, a flag image, and Pilot helpers."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from tui.fake_service import FakeService


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests in a fresh event loop (no pytest-asyncio needed)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**arguments))
        return True
    return None


@pytest.fixture
def flag(tmp_path, monkeypatch) -> Path:
    """A 12×8 tricolour PNG at ``images/flag_fra.png`` under the working directory (a temp dir), so the
    detail pane shows the same relative path on every machine."""
    from PIL import Image

    image = Image.new("RGB", (12, 8), (0, 35, 149))
    image.paste((255, 255, 255), (4, 0, 8, 8))
    image.paste((237, 41, 57), (8, 0, 12, 8))
    (tmp_path / "images").mkdir()
    path = tmp_path / "images" / "flag_fra.png"
    image.save(path)
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def fake(flag) -> FakeService:
    return FakeService(str(flag))
