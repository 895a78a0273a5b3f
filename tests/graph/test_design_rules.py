"""Design rule: the graph algorithms are pure Python, importable and testable without Ray or any
model engine (verinet.backends); member calls live in verinet.orchestration."""

import pkgutil
import subprocess
import sys

import verinet.graph


def test_graph_imports_neither_ray_nor_backends():
    modules = [m.name for m in pkgutil.iter_modules(verinet.graph.__path__)]
    assert {"topology", "build", "aggregate", "propagate", "pipeline"} <= set(modules)
    code = ("import sys, verinet.graph\n"
            + "".join(f"import verinet.graph.{m}\n" for m in modules)
            + "from verinet.graph.agreement import agreement\nagreement({0: {'a': 1.0, 'b': 0.0}})\n"
            + "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'verinet.backends',"
              " 'verinet.orchestration', 'verinet.cluster', 'verinet.serve', 'torch')))\n"
            + "assert not bad, f'verinet.graph imported {bad}'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
