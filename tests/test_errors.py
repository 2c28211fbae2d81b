"""vitc.errors' helpers: what a one-line error quotes of an exception it reports."""

from __future__ import annotations

import pytest

from vitc.errors import first_line, joined_lines, named_first_line


@pytest.mark.parametrize(
    ("exc", "said", "line"),
    [
        (RuntimeError("first\nsecond"), "", "first"),
        (RuntimeError("\n  \n  indented first  \nsecond"), "", "indented first"),
        (AssertionError(), "", "AssertionError"),  # torch.onnx.export's bare assert: was an IndexError
        (RuntimeError("\n"), "", "RuntimeError"),  # whitespace alone: `if str(exc)` let it through to [0]
        (
            ImportError(),
            "warning\nmodule compiled against API version 0xe\n\n",
            "module compiled against API version 0xe",
        ),
        (ImportError("libfoo.so: cannot open"), "printed", "libfoo.so: cannot open"),  # its own text first
        (KeyError("x"), "", "'x'"),
    ],
)
def test_first_line_is_the_first_said_never_an_index_error(exc: BaseException, said: str, line: str) -> None:
    assert first_line(exc, said=said) == line


def test_first_line_is_cut_to_its_limit() -> None:
    assert first_line(ValueError("x" * 500)) == "x" * 300
    assert first_line(ValueError("abcdef\nmore"), limit=3) == "abc"
    assert first_line(ImportError(), limit=4, said="long last line") == "long"


def test_named_first_line_names_the_type_once() -> None:
    assert named_first_line(KeyError("x")) == "KeyError: 'x'"
    assert named_first_line(AssertionError()) == "AssertionError"  # not "AssertionError: "
    assert named_first_line(RuntimeError("\n a \nb"), limit=1) == "RuntimeError: a"


def test_joined_lines_keeps_the_detail_below_the_first_line_on_one_line() -> None:
    """A resume file whose state dict does not fit said load_state_dict's message over several lines."""
    exc = RuntimeError('Error(s) in loading state_dict for DeiT:\n\tMissing key(s) in state_dict: "head.bias".')
    assert joined_lines(exc) == 'Error(s) in loading state_dict for DeiT: Missing key(s) in state_dict: "head.bias".'
    assert joined_lines(exc, limit=5) == "Error" and joined_lines(AssertionError()) == "AssertionError"
