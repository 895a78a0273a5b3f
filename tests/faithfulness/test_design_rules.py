"""Design rule: the faithfulness suite is plain Python over a caller; it never imports Ray."""

import subprocess
import sys

from pathlib import Path

import verinet.faithfulness

MODULES = sorted(p.stem for p in Path(verinet.faithfulness.__file__).parent.glob("*.py") if p.stem != "__init__")


def test_no_ray_import():
    code = ("import sys, verinet.faithfulness as f\n"
            + "".join(f"import verinet.faithfulness.{m}\n" for m in MODULES)
            + "f.evaluate_model, f.evaluate_pipeline, f.plot_curves\n"
            + "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_package_imports_lazily():
    code = ("import sys, verinet.faithfulness, verinet.faithfulness.cli\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'networkx', 'verinet.graph') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_exports_are_complete():
    import verinet.faithfulness as f

    assert sorted(f.__all__) == sorted(f._EXPORTS) == sorted(dir(f))
    for name in f.__all__:
        assert getattr(f, name) is not None
