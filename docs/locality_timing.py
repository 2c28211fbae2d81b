"""What TensorBoard's locality figures cost per epoch, by part: copying the model to the CPU (what
`vitc train --set log.tensorboard=true` did before f6bf55f), the analysis on the CPU, and the figures.

    PYTHONPATH=. python docs/locality_timing.py convit_tiny convit_base spvit_s cvt_13

One thread, 16 images at 224 (TensorBoardLog.SAMPLE), random weights; the figures in docs/benchmarks.md.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from vitc.analysis import figures
from vitc.analysis.locality import analyse
from vitc.models import create_model
from vitc.train.report import TensorBoardLog


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    images = torch.randn(TensorBoardLog.SAMPLE, 3, 224, 224)
    for name in names:
        model = create_model(name, num_classes=10)
        started = time.perf_counter()
        on_cpu = copy.deepcopy(model).float().cpu()
        copied = time.perf_counter()
        report = analyse(on_cpu, images)
        analysed = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            written = figures.write_all(report, Path(folder))
        drawn = time.perf_counter()
        print(f"{name}: copy {copied - started:.2f} s, analysis {analysed - copied:.2f} s, "
              f"figures {drawn - analysed:.2f} s ({len(written)} files)")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:] or ["convit_tiny"])
