"""nodekit/proc.py: the malloc-arena cap pi_edge sets before its threads start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _child(code: str, **env: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**{k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.strip()


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc's mallopt only")
def test_the_arena_cap_takes_on_glibc_and_leaves_an_operators_setting_alone() -> None:
    code = "from nodekit.proc import limit_malloc_arenas; print(limit_malloc_arenas())"
    assert _child(code) == "True"
    assert _child(code, MALLOC_ARENA_MAX="4") == "False"  # the environment wins


def test_pi_edge_run_caps_the_arenas_before_anything_else() -> None:
    """`pi_edge run` calls it first (a thread started before keeps its own arena)."""
    import inspect

    from pi_edge import __main__ as edge_main

    body = inspect.getsource(edge_main._run).splitlines()
    first = next(line.strip() for line in body[1:] if line.strip())
    assert first.startswith("limit_malloc_arenas()")
