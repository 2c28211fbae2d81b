"""The decoded-size check (`check_decoded`) where POSIX's `resource` and os.sysconf do not exist (Windows)."""

from __future__ import annotations

import ctypes
import os
import sys
from types import SimpleNamespace

import pytest

from vitc.data.datasets import check_decoded
from vitc.errors import VitcError


class _Kernel32:
    """GlobalMemoryStatusEx of a machine with `total` bytes of RAM, as Windows' kernel32 answers it."""

    def __init__(self, total: int) -> None:
        self.total = total

    def GlobalMemoryStatusEx(self, ref: object) -> int:  # the Win32 name
        status = ref._obj  # type: ignore[attr-defined]
        assert status.dwLength == ctypes.sizeof(status)  # the call fails unless the caller sets it
        status.ullTotalPhys = self.total
        return 1


@pytest.fixture
def windows_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource: ImportError, as on Windows
    monkeypatch.delattr(os, "sysconf")
    monkeypatch.setattr(ctypes, "windll", SimpleNamespace(kernel32=_Kernel32(4 * 2**30)), raising=False)


def test_digits_fit_where_resource_and_sysconf_are_missing(windows_memory: None) -> None:
    check_decoded(1797, 32, "digits", can_stream=False)  # `vitc train`'s default data: was ModuleNotFoundError


def test_windows_physical_memory_bounds_the_check(windows_memory: None) -> None:
    with pytest.raises(VitcError, match=r"over half the 4\.0 GiB this process can use"):
        check_decoded(1797, 10000, "digits", can_stream=False)


def test_no_memory_figure_at_all_lets_the_set_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resource", None)
    monkeypatch.delattr(os, "sysconf")
    monkeypatch.delattr(ctypes, "windll", raising=False)
    check_decoded(1797, 10000, "digits", can_stream=False)
