"""Session fixtures shared by tests/export, tests/quant and tests/compile: a briefly trained
convit_micro and its exports; and the typing tests' one mypy run.

Built once per session and only when a test asks for them (training ~10 s of CPU, three exports ~12 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

# A suite started in the background of a script (`make test &`, nohup) inherits SIGINT ignored, and Python
# then leaves it so: the Ctrl-C tests (vitc takes SIGINT only from Python's default handler, as it leaves a
# handler the embedding program chose) would see nothing arrive. Theirs is the terminal's Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# `make test` runs the suite in pytest-xdist's workers (TEST_WORKERS, two). Each runs torch on one intra-op thread, and
# so do the processes its tests start: two OpenMP threads per worker on 2 cores spin-wait for each other (see
# torch_threads). Set before anything imports torch, as OMP_NUM_THREADS must be.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
TERMINAL_ENV = ("COLUMNS", "LINES")  # a worker starts with COLUMNS=80, LINES=24 that the suite's process lacks


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, in the controlling process: hand each worker this process's terminal size variables."""
    node.workerinput["terminal_env"] = {name: os.environ.get(name) for name in TERMINAL_ENV}


def pytest_configure(config: pytest.Config) -> None:
    """In a worker, the terminal size variables as the suite's process has them: vitc writes output that is not a
    terminal 200 columns wide unless COLUMNS says otherwise (vitc._terminal.LOG_WIDTH), and its tests read it so."""
    for name, value in getattr(config, "workerinput", {}).get("terminal_env", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _sys_path_restored() -> Iterator[None]:
    """Each test leaves sys.path as it found it: a docs/ script loaded in-process (gpu_check.py puts the repository
    root and docs/ first) made later tests pass that fail alone or in another xdist worker."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on `count` intra-op threads, then restore the number it had.

    A model this small trains fastest on one thread: on 2 cores shared with other jobs, two OpenMP
    threads spin-wait for each other and a step costs 8-10 times the CPU time (0.13 s → 1.0-1.3 s).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """convit_micro (2 blocks) after 160 AdamW steps on digits, so accuracy and drift mean something.

    160, not 80: after 80 the test top-1 was 0.33–0.54 over three seeds (and 0.42 on torch 2.11, whose
    trunc_normal_ draws other weights), so a "well past chance" check passed by luck; after 160, 0.74–0.90."""
    import torch
    import torch.nn.functional as F

    from vitc.checkpoint import meta_for, write_checkpoint
    from vitc.data.datasets import load_dataset
    from vitc.data.transforms import eval_transform
    from vitc.models import create_model, get_model_cfg

    torch.manual_seed(0)
    model = create_model("convit_micro", depth=2, local_up_to_layer=1)
    cfg = get_model_cfg(model)
    data = load_dataset("digits", "train", image_size=32, in_chans=3)
    x, y = eval_transform(data.images, cfg.mean, cfg.std), data.labels
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    with torch_threads(1):
        for _ in range(160):
            idx = torch.randint(0, len(y), (64,), generator=generator)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    meta = meta_for(model, class_names=data.class_names, extra={"train_config": {"data": {"name": "digits"}}})
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "convit" / "model.safetensors", model, meta)


@pytest.fixture(scope="session")
def exports(trained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fp32 (dynamic batch 1:4:8), fp16 and int8 (static batch 8, 128 calibration images, --explain)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitc.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("export")
    options = {
        "fp32": ExportOptions("fp32", out=out, run="r", dynamic_batch="1:4:8"),
        "fp16": ExportOptions("fp16", out=out, run="r"),
        "int8": ExportOptions("int8", out=out, run="r", batch=8, calib_images=128, explain=True),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: export_checkpoint(trained_ckpt, opts, say=lambda _m: None) for name, opts in options.items()}


@pytest.fixture(scope="session")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One mypy run for every typing test (tests/mypy_run.py: they share its 15 s of reading torch's stubs)."""
    from tests import mypy_run

    if not mypy_run.available():
        pytest.skip("mypy is not installed")
    return mypy_run.run(tmp_path_factory.mktemp("mypy"))
