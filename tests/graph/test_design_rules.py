"""Design rule: the graph algorithms are pure Python, importable and testable without Ray."""

import subprocess
import sys

MODULES = ["topology", "build", "aggregate", "propagate", "select", "agreement", "export", "pipeline"]


def test_no_ray_import():
    code = ("import sys, verinet.graph\n"
            + "".join(f"import verinet.graph.{m}\n" for m in MODULES)
            + "from verinet.graph.agreement import agreement\nagreement({0: {'a': 1.0, 'b': 0.0}})\n"
            + "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
