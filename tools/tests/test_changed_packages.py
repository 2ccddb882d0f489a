import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "changed_packages", Path(__file__).resolve().parents[1] / "changed_packages.py"
)
changed_packages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(changed_packages)


def test_bottom_change_selects_everything_that_declares_it():
    targets = changed_packages.affected(["packages/jpm-core/src/jpm_core/__init__.py"])
    deps = changed_packages.declared_siblings()
    assert "jpm-core" in targets
    assert "integration" in targets
    for name, sibs in deps.items():
        if "jpm-core" in sibs:
            assert name in targets
    assert "jflows" not in targets or "jpm-core" in deps["jflows"]


def test_top_change_selects_only_the_top():
    assert changed_packages.affected(["packages/jinfer/README.md"]) == ["jinfer", "integration"]


def test_shared_file_selects_all():
    targets = changed_packages.affected(["noxfile.py"])
    assert set(changed_packages.declared_siblings()) <= set(targets)


def test_docs_only_change_selects_no_package():
    assert changed_packages.affected(["docs/index.md"]) == []
