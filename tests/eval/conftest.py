"""Fixtures for the sandbox tests."""

import pytest
from sandbox_modes import accessible_python, python_for

from codekiln.eval import sandbox


@pytest.fixture(scope="session")
def nobody_python():
    """accessible_python(), once per session."""
    return accessible_python()


@pytest.fixture
def in_mode(monkeypatch):
    """in_mode(mode): make the sandbox run with the interpreter that mode needs here, or skip with one line."""
    def use(mode: str) -> str:
        python, why = python_for(mode)
        if python is None:
            pytest.skip(f"sandbox mode {mode} is not available here: {why}")
        monkeypatch.setattr(sandbox, "_python", lambda: python)
        return mode

    return use
