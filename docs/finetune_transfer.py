"""Fine-tuning transfer on digits, as tests/train/test_finetune.py runs it, with the figures printed.

deit_micro (2 blocks, width 48, 16x16) is pretrained on digits 0-4, then trained on digits 5-9 from
10 images per class for 50 steps, once from scratch and once from the 0-4 weights (same budget).

    python docs/finetune_transfer.py 1   # threads
    python docs/finetune_transfer.py 2
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    test = importlib.import_module("tests.train.test_finetune")
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
    torch.set_num_threads(threads)
    out = Path(tempfile.mkdtemp())
    with pytest.MonkeyPatch.context() as patch:
        pretrain = {"optim.epochs": 20, "optim.batch_size": 32, "optim.lr": 2e-3}  # the test's `pretrained` fixture
        pre = test._train(patch, test.LOWER, out, "lower", **pretrain)
    with pytest.MonkeyPatch.context() as patch:
        scratch = test._train(patch, test.UPPER, out, "scratch", **test.FEW_SHOT)
    weights = str(pre.run_dir / "best.safetensors")
    with pytest.MonkeyPatch.context() as patch:
        tuned = test._train(patch, test.UPPER, out, "tuned", **test.FEW_SHOT, **{"model.pretrained": weights})
    print(
        f"threads {threads}: pretrained on 0-4 {pre.test['top1']:.1f}%; on 5-9 from scratch "
        f"{scratch.test['top1']:.1f}%, fine-tuned {tuned.test['top1']:.1f}%"
    )


if __name__ == "__main__":
    main()
