"""Which sandbox modes work on this machine, and with which interpreter (shared by the sandbox tests)."""

import os
import shutil
import subprocess
import sys

import pytest

from codekiln.eval import sandbox

ISOLATING = ("root", "userns", "bwrap")


def accessible_python():
    """An interpreter the sandbox's unprivileged uid can run: ours, or the system's when ours is under /root."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = ["/bin/sh", "-c", 'exec "$0" -I -c pass', candidate]  # the shell's exec, as the sandbox's
        if os.geteuid() == 0:
            probe = ["setpriv", f"--reuid={sandbox.NOBODY}", f"--regid={sandbox.NOBODY}", "--clear-groups", *probe]
        if shutil.which(probe[0]) and subprocess.run(probe, capture_output=True).returncode == 0:
            return candidate
    return None


def python_for(mode: str) -> tuple[str | None, str]:
    """(an interpreter that runs programs in `mode` here, "") or (None, why the mode does not work here).

    As root the `userns`, `bwrap` and `none` modes run the program as nobody, who cannot reach an interpreter
    under /root: those modes get the system's Python, which the test programs (stdlib only) are content with."""
    why = "no interpreter that an unprivileged uid may run"
    if mode == "none":
        python = accessible_python()
        return (python, "") if python else (None, why)
    for python in dict.fromkeys(p for p in (sys.executable, accessible_python()) if p):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sandbox, "_python", lambda python=python: python)
            why = sandbox._probe_mode(mode, python)
        if why is None:
            return python, ""
    return None, why
