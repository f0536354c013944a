"""A guard for tests that evaluate models in llama.cpp (a module of its own: `conftest` names whichever
directory's conftest pytest loaded last)."""

import pytest


def skip_llama_cpp_evaluation_on_amx():
    """Skip a test that evaluates a model in llama.cpp on a CPU that advertises AMX: on such a VM (a 2-core
    Sapphire Rapids, 2026-12-08) llama.cpp built for the host dies with SIGILL/SIGSEGV in its AMX kernels, which
    takes the whole test run down. Loading vocabularies and tokenizing are unaffected and still run."""
    from pathlib import Path

    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return
    if "amx_tile" in flags:
        pytest.skip("llama.cpp crashes in its AMX kernels on this AMX CPU (host-built llama-cpp-python); "
                    "its evaluation is tested on CPUs without AMX")
