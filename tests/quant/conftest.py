"""The yardstick the precision tests measure against, computed here rather than read from the export.

`vitc export` measures its own drift and refuses a file beyond `--max-drop`; a test that re-reads
that measurement cannot fail on its own. These fixtures run the FP32 PyTorch model of the trained
checkpoint on digits' test split, so the FP16/INT8 files are judged by their logits on ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_reference(trained_ckpt: Path) -> dict[str, Any]:
    """digits' test images (normalised), labels and the PyTorch FP32 logits of the checkpoint."""
    import torch

    from vitc.checkpoint import read_checkpoint
    from vitc.data.datasets import load_dataset
    from vitc.data.transforms import eval_transform
    from vitc.models import get_model_cfg

    model, _meta = read_checkpoint(trained_ckpt)
    cfg = get_model_cfg(model)
    data = load_dataset("digits", "test", image_size=32, in_chans=3)
    images = eval_transform(data.images, cfg.mean, cfg.std)
    with torch.no_grad():
        logits = model.eval()(images).numpy().astype(np.float64)
    return {"images": images.numpy(), "labels": data.labels.numpy(), "logits": logits}


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of an exported file on ONNX Runtime (CPU), in chunks of the batch its input accepts."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    feed_type = np.float16 if spec.type == "tensor(float16)" else np.float32
    batch = spec.shape[0] if isinstance(spec.shape[0], int) else 8
    rows = len(images) - len(images) % batch  # a static-batch file takes whole batches only
    chunks = [session.run(None, {"input": images[i : i + batch].astype(feed_type)})[0] for i in range(0, rows, batch)]
    return np.concatenate(chunks).astype(np.float64)
