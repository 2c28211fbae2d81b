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


def test_imports_in_threads_leave_stderr_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vitc eval --workers 2` decoded in threads that each imported PIL through import_optional, which swaps the
    global sys.stderr: thread A in, B in, A out (restores the real one), B out (restores A's StringIO) left
    stderr a StringIO, and every later line ("skipped: cannot read image ...") vanished. Forced here in that
    order with two modules that wait for each other (a timeout lets the serialised form go on)."""
    import threading
    import types

    from vitc._lazy import import_optional

    events = types.SimpleNamespace(a_in=threading.Event(), b_in=threading.Event(), a_out=threading.Event())
    monkeypatch.setitem(sys.modules, "vitc_race_events", events)
    (tmp_path / "vitc_race_a.py").write_text("import vitc_race_events as e\ne.a_in.set()\ne.b_in.wait(2)\n")
    (tmp_path / "vitc_race_b.py").write_text("import vitc_race_events as e\ne.b_in.set()\ne.a_out.wait(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("vitc_race_a", "vitc_race_b"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    real = sys.stderr

    def first() -> None:
        import_optional("vitc_race_a")
        events.a_out.set()

    def second() -> None:
        events.a_in.wait(2)
        import_optional("vitc_race_b")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    leaked, sys.stderr = sys.stderr, real
    assert leaked is real
    assert import_optional("vitc_race_a")[0] is sys.modules["vitc_race_a"]
