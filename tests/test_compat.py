"""The module paths of fpsim 0.1 that moved still import and give the same objects."""

import importlib
import subprocess
import sys

import pytest

import fpsim
from fpsim import _compat


@pytest.mark.parametrize("old, new", sorted(_compat.MOVED.items()))
def test_old_module_paths_forward_to_the_new_ones(old, new):
    mod = importlib.import_module(old)
    target = importlib.import_module(new)
    names = getattr(target, "__all__", None) or [n for n in dir(target) if not n.startswith("_")]
    assert names
    for name in names:
        assert getattr(mod, name) is getattr(target, name), (old, name)


def test_from_imports_of_old_paths():
    from fpsim.cli import main  # noqa: F401  (fpsim 0.1's console entry point)
    from fpsim.scaling import QuantSpec, fake_quantize

    assert QuantSpec is fpsim.QuantSpec and fake_quantize is fpsim.fake_quantize


def test_an_unknown_attribute_of_an_old_path_is_an_attribute_error():
    import fpsim.scaling

    with pytest.raises(AttributeError):
        fpsim.scaling.no_such_name


def test_the_package_does_not_load_its_top_layers_on_import():
    code = ("import sys, fpsim; top = [m for m in sys.modules if m.startswith(('fpsim.models', "
            "'fpsim.app', 'fpsim.data', 'fpsim.plotting', 'matplotlib'))]; print(top)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert fpsim.models.load is importlib.import_module("fpsim.models").load
