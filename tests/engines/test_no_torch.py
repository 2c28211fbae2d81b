"""The runtime path (`vitc bench --engine x.onnx|x.plan`) must not import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import json, typer
from typer.testing import CliRunner
import vitc.engines, vitc.engines.onnxrt, vitc.engines.tensorrt, vitc.engines.cuda, vitc.artifacts
import vitc.build.tensorrt, vitc.engines.trt_plan, vitc.engines.trt_runner
import vitc.bench.timing, vitc.bench.report, vitc.bench.runner, vitc.cli.bench, vitc.cli.info
from vitc.cli._errors import handle_errors
from vitc.cli.bench import bench
app = typer.Typer()
app.callback()(lambda: None)
app.command("bench")(handle_errors(bench))
result = CliRunner().invoke(app, ["bench", "--engine", sys.argv[1], "--batch", "1,2", "-n", "3", "--warmup", "1",
                                  "--json", sys.argv[2]])
loaded = sorted(m for m in sys.modules if (m == "torch" or m.startswith("torch.")) and sys.modules[m] is not None)
print(json.dumps({"exit": result.exit_code, "output": result.output, "torch": loaded}))
"""


def test_bench_onnx_imports_no_torch(tiny_onnx: Path, tmp_path: Path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_onnx), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0, result["output"]
    assert result["torch"] == []
    assert [row["batch"] for row in json.loads(out.read_text())["rows"]] == [1, 2]


EVAL = r"""
import sys
sys.modules["torch"] = None
import json
from typer.testing import CliRunner
from vitc.cli.main import app
result = CliRunner().invoke(app, ["eval", sys.argv[1], "--out", sys.argv[2]])
loaded = sorted(m for m in sys.modules if (m == "torch" or m.startswith("torch.")) and sys.modules[m] is not None)
print(json.dumps({"exit": result.exit_code, "output": result.output, "torch": loaded}))
"""


def test_eval_of_an_engine_imports_no_torch(export_dir: Path, tmp_path: Path):
    """`vitc eval x.onnx` through the whole CLI, with the confusion PNG when matplotlib is installed."""
    png = tmp_path / "cm.png"
    done = subprocess.run(
        [sys.executable, "-c", EVAL, str(export_dir / "model.fp32.onnx"), str(png)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0 and result["torch"] == [], result
    assert json.loads(png.with_suffix(".json").read_text())["images"] == 12
