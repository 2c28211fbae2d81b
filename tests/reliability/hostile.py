"""Hostile inputs, built as an attacker would: valid containers with malicious or absurd contents.

Each builder writes one file (or folder) under `root` and returns its path. The campaign in
test_campaign.py feeds them to every command that reads that kind of file.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitc.checkpoint import META_KEY, CheckpointMeta, meta_for, write_checkpoint
from vitc.models import create_model

SMALL = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def good_checkpoint(root: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("deit_micro", **SMALL)
    return write_checkpoint(root / "good" / "model.safetensors", model, meta_for(model, class_names=list("0123456789")))


def safetensors_bytes(header: dict[str, Any], payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def rewrite_meta(good: Path, path: Path, **changes: Any) -> Path:
    """`good` with its vitc metadata record changed (the tensors untouched)."""
    data = good.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    record = json.loads(header["__metadata__"][META_KEY])
    for key, value in changes.items():
        target = record
        *parents, last = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    header["__metadata__"][META_KEY] = json.dumps(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_bytes(header, data[8 + length :]))
    return path


def rewrite_header(good: Path, path: Path, edit: Any) -> Path:
    """`good` with `edit(header)` applied to its raw safetensors header."""
    data = good.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edit(header)
    path.write_bytes(safetensors_bytes(header, data[8 + length :]))
    return path


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def pth(path: Path, obj: Any) -> Path:
    torch.save(obj, path)
    return path


def foreign_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in create_model("deit_micro", **SMALL).state_dict().items()}


def self_referential_cifar_batch(path: Path) -> Path:
    """A CIFAR-10 python batch whose `data` is a list that contains itself (pickle memo reference)."""
    loop: list[Any] = []
    loop.append(loop)
    path.write_bytes(pickle.dumps({b"data": loop, b"labels": [0]}, protocol=2))
    return path


def heldout_bomb(path: Path, images: int = 1_000_000) -> Path:
    """A 1 KB .npz whose header declares `images` 3×224×224 float32 images."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (images, 3, 224, 224)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", buf.getvalue() + bytes(64))
        for name, array in (("labels", np.zeros(4, np.int64)), ("reference_logits", np.zeros((4, 10), np.float32))):
            member = io.BytesIO()
            np.save(member, array)
            archive.writestr(f"{name}.npy", member.getvalue())
    return path


def onnx_model(path: Path, inputs: list[Any], body: str = "identity") -> Path:
    """A small ONNX file with the given input value-infos (e.g. 100000² images, strings, none)."""
    from onnx import TensorProto, helper, save

    if body == "constant":
        nodes = [helper.make_node("Constant", [], ["logits"], value=helper.make_tensor("v", 1, [1, 10], [0.0] * 10))]
    else:
        nodes = [helper.make_node("Identity", [inputs[0].name], ["logits"])]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def image_folder(root: Path, class_names: tuple[str, ...] = ("a", "b"), size: tuple[int, int] = (12, 10)) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for i, name in enumerate(class_names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(3):
                Image.new("RGB", size, (40 * i + j, 80, 120)).save(folder / f"{j}.png")
    return root


def long_thin_png(path: Path, width: int = 1_000_000) -> Path:
    from PIL import Image

    Image.new("L", (width, 1), 128).save(path)
    return path


def checkpoint_like(meta: CheckpointMeta, good: Path, path: Path) -> Path:
    """`good`'s tensors under a whole new metadata record."""
    return rewrite_header(good, path, lambda h: h["__metadata__"].update({META_KEY: meta.to_json()}))


def zero_stride_pos_embed(path: Path, grid: int = 60_000) -> Path:
    """A .pth whose pos_embed is one stored token repeated by a zero stride into a grid×grid grid:
    a few KB on disk, (1 + grid²) × 32 floats (460 GB at 60,000²) once anything copies it."""
    sd = foreign_state_dict()
    dim = sd["pos_embed"].shape[-1]
    sd["pos_embed"] = torch.zeros(1, 1, dim).expand(1, 1 + grid * grid, dim)
    torch.save(sd, path)
    return path


def empty_heldout(path: Path, classes: int = 10) -> Path:
    """A well-formed held-out set with 0 samples."""
    np.savez(path, images=np.zeros((0, 3, 32, 32), np.float32), labels=np.zeros(0, np.int64),
             reference_logits=np.zeros((0, classes), np.float32))  # fmt: skip
    return path


def symlink_loops(root: Path) -> Path:
    """An image folder where train/a holds a folder linking to its parent and a file linking to itself."""
    image_folder(root)
    (root / "train" / "a" / "up").symlink_to("..", target_is_directory=True)
    (root / "train" / "a" / "self.png").symlink_to("self.png")
    (root / "val" / "loop").symlink_to("loop")  # a class "folder" that is a link to itself
    return root


def deep_dotted_toml(path: Path, depth: int = 3000) -> Path:
    """A recipe whose one key is `depth` dotted parts long (tomllib recurses once per part)."""
    path.write_text("a." * depth + "b = 1\n")
    return path
