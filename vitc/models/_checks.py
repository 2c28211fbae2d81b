"""Constructor arguments that build a module but not a working model, refused before any layer is made.

torch accepts all of these: depth 0 (no block: the head reads the patch embedding), a dropout of 1 (every
activation zeroed), a drop-path rate of 1 (NaN: a kept sample is divided by 0), an MLP ratio that leaves no
hidden unit, a class token that no block attends to (a constant classifier). Each is a ValueError that names
the argument, its value and what is allowed, as the layers' own shape checks are (PatchEmbed's image size):
`build_model`, which `create_model`, the entry points and `vitc train` go through, makes it one VitcError line.
"""

from __future__ import annotations

from collections.abc import Mapping


def check_blocks(
    depth: int, embed_dim: int, num_heads: int, mlp_ratio: float, stage: int | None = None, empty_ok: bool = False
) -> None:
    """A stack of `depth` blocks `embed_dim` wide with `num_heads` heads and MLPs `mlp_ratio` times as wide.
    `stage`: a CvT stage's index (its arguments are per-stage lists, named `depths[i]`, ...); `empty_ok`: the
    stage may have no block (a CvT stage before the last is then its convolutional embedding alone)."""

    def name(single: str, plural: str) -> str:
        return single if stage is None else f"{plural}[{stage}]"

    depth_name, dim_name = name("depth", "depths"), name("embed_dim", "embed_dims")
    heads_name = name("num_heads", "num_heads")
    if depth < (0 if empty_ok else 1):
        raise ValueError(f"{depth_name} must be at least {0 if empty_ok else 1} (the number of blocks), got {depth}")
    if num_heads < 1:
        raise ValueError(f"{heads_name} must be at least 1, got {num_heads}")
    if embed_dim % num_heads:
        raise ValueError(
            f"{dim_name}={embed_dim} does not split into {heads_name}={num_heads} heads: the width must be a multiple "
            f"of the heads (e.g. {multiples_near(embed_dim, num_heads)})"
        )
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be positive (the MLP's width over {dim_name}), got {mlp_ratio}")
    if int(embed_dim * mlp_ratio) < 1:
        raise ValueError(
            f"mlp_ratio={mlp_ratio} leaves the {dim_name}={embed_dim} blocks' MLPs no hidden unit "
            f"(int({embed_dim} x {mlp_ratio}) = 0): it must be at least 1/{embed_dim}"
        )


def check_rates(rates: Mapping[str, float]) -> None:
    """Each dropout or drop-path probability, by its argument's name, in [0, 1): 1 drops everything."""
    for key, rate in rates.items():
        if not 0 <= rate < 1:
            raise ValueError(f"{key} must be in [0, 1) (a probability of dropping; 1 drops everything), got {rate}")


def check_class_token(local_up_to_layer: int, depth: int, global_pool: str, other_reader: bool = False) -> None:
    """ConViT's and SP-ViT's late class token joins before block `local_up_to_layer`, which 0..depth allows.

    At `depth` it joins after the last block (the references never insert it there and classify a patch
    token): no block attends to it, so with global_pool='token' the classifier reads the same normed token
    for every image. Refused unless something else reads the patches (`other_reader`: SP-ViT's aux_head).
    """
    if not 0 <= local_up_to_layer <= depth:
        raise ValueError(f"local_up_to_layer must be in 0..depth={depth}, got {local_up_to_layer}")
    if local_up_to_layer == depth and global_pool == "token" and not other_reader:
        raise ValueError(
            f"local_up_to_layer={depth} (= depth) inserts the class token after the last block, where no block "
            f"attends to it: global_pool='token' would classify a constant; pass local_up_to_layer below {depth}, "
            "or global_pool='avg'"
        )


def multiples_near(value: int, step: int) -> str:
    """The multiples of `step` on either side of `value` (the smallest, `step`, below it), for a message."""
    below = value - value % step
    return f"{below} or {below + step}" if below else f"{step}"
