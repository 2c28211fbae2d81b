"""vitc._lazy is the one home of optional imports: LazyModule, the module-level proxy of the TensorRT
adapters, lives there beside lazy_import."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vitc._lazy import LazyModule
from vitc.errors import VitcError


def test_lazy_module_imports_the_first_installed_name_on_first_use(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "vitc_fake_backend.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vitc_fake_backend", raising=False)
    proxy = LazyModule("vitc_no_such_backend", "vitc_fake_backend")
    assert "vitc_fake_backend" not in sys.modules  # binding it imports nothing
    assert proxy.VALUE == 42 and "vitc_fake_backend" in sys.modules
    monkeypatch.delitem(sys.modules, "vitc_fake_backend")


def test_lazy_module_of_nothing_installed_names_the_first_in_one_line() -> None:
    proxy = LazyModule("tensorrt_vitc_absent", "tensorrt_vitc_absent_too")
    with pytest.raises(VitcError, match=r"^this command needs 'tensorrt_vitc_absent', which is not installed"):
        proxy.Logger  # noqa: B018


def test_the_trt_adapters_share_the_one_lazy_module() -> None:
    import vitc.build.trt_precision
    import vitc.engines.base
    import vitc.engines.trt_runner

    assert isinstance(vitc.engines.trt_runner.trt, LazyModule) and isinstance(vitc.build.trt_precision.trt, LazyModule)
    assert not hasattr(vitc.engines.base, "LazyModule")  # one mechanism: engines import theirs from vitc._lazy
