"""Out-of-tree plugins register through entry points and then work like built-ins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from control_plane.errors import ConfigError


def _install_plugin(tmp_path: Path, entry_points: str) -> Path:
    """A minimal installed distribution (a .dist-info folder) with the given entry points."""
    (tmp_path / "myplugin.py").write_text(textwrap.dedent("""
        from control_plane.policies.base import HeapPolicy
        from control_plane.routing import PipelineRouter
        from control_plane.routing.pickers import RandomPicker

        class Shortest(HeapPolicy):
            name = "shortest_first"
            def key(self, request):
                return request.prompt_tokens

        def lucky(**_):
            return PipelineRouter(RandomPicker(), name="lucky")

        def broken():
            raise RuntimeError("never built")
    """))
    dist = tmp_path / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)
    return tmp_path


def _run(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[2]
    env_path = f"{tmp_path}:{root}"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
                          timeout=60)


def test_entry_point_plugins_are_usable_by_name(tmp_path):
    _install_plugin(tmp_path, "[sagellm.policies]\nshortest_first = myplugin:Shortest\n"
                              "[sagellm.routers]\nlucky = myplugin:lucky\n")
    out = _run(tmp_path, """
        from control_plane import ControlPlane, InstanceSpec, Request
        from control_plane.policies import POLICIES
        cp = ControlPlane([InstanceSpec("a", max_inflight=1)], policy="shortest_first",
                          router="lucky")
        for k, n in enumerate([300, 100, 200, 50]):
            cp.submit(Request(f"r{k}", 0.0, n, output_tokens=1), 0.0)
        order = []
        for rid in ["r0", "r3", "r1", "r2"]:
            order += [a.request.request_id for a in cp.complete(rid, 1.0)]
        print(order, "shortest_first" in POLICIES.names())
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['r3', 'r1', 'r2'] True"


def test_duplicate_plugin_name_is_an_error(tmp_path):
    _install_plugin(tmp_path, "[sagellm.policies]\nfifo = myplugin:Shortest\n")
    out = _run(tmp_path, """
        from control_plane.policies import create_policy
        create_policy("nonexistent")
    """)
    assert out.returncode != 0
    assert "duplicates the policies name 'fifo'" in out.stderr


def test_unknown_name_lists_known_ones():
    from control_plane.policies import create_policy
    from control_plane.routing import create_router

    with pytest.raises(ConfigError, match=r"unknown policies 'lifo'; known: adaptive, cost"):
        create_policy("lifo")
    with pytest.raises(ConfigError, match=r"unknown routers 'nearest'; known: .*round_robin"):
        create_router({"type": "nearest"})
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['agin_s'\]"):
        create_policy({"type": "priority", "params": {"agin_s": 3}})
