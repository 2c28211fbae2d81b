"""What `make gpu-check` (docs/gpu_check.py) runs: the plan for a lent GPU, and the dry run's on CPU.

FULL sizes each section for an H200 or H100 inside the device budget (docs/gpu_check.py's shares of its 530 s);
DRY runs the same plumbing with micro models in seconds (CI, tests/engines/test_cuda_gpu_check.py).
"""

FULL = {
    "bench_models": ("deit_tiny", "convit_tiny", "cvt_13", "spvit_s"),
    "bench_args": ["-b", "1,8,64", "-n", "20", "--warmup", "5", "--rounds", "3"],
    "precisions": ("fp32", "fp16"),
    "device": "cuda",
    "train": [  # (model, amp[, settings]), most wanted first: a row starts only while the last one's time is left
        ("deit_tiny", "bf16"),
        # the only feed that decodes real JPEGs: does run.workers' default keep up? (its data wait beside the first's)
        ("deit_tiny", "bf16", 'data.dir="@photos" data.stream="stream"'),
        ("convit_tiny", "bf16"),
        ("cvt_13", "bf16"),
        ("spvit_s", "bf16"),
        ("convit_tiny", "off"),
        # last, where time is left: DeiT's whole augmentation recipe (docs/feed_timing.py measures its cost first)
        ("deit_tiny", "bf16", 'aug.auto_augment="rand-m9-mstd0.5-inc1" aug.mixup=0.8 aug.cutmix=1.0 aug.erasing=0.25'),
    ],
    "train_set": ["data.image_size=224", "optim.epochs=2", "optim.batch_size=128", "data.fraction=1.0"],
    "photos": 2048,  # 320×256 JPEGs for the streamed run (and 204 for val): 16 steps an epoch
    # would a worker thread hide DeiT's augmentation launches behind the step's? (docs/feed_timing.py: 60 steps)
    "feed_timing": "--device cuda --model deit_tiny --batch 128 --img 224 --amp bf16 --steps 4 --calls 1 --rounds 3",
    "ratios": {
        "micro": False,
        "batch": 64,
        "amps": ("bf16", "off"),
        "rounds": 5,
        "steps": 4,
        "warmup": 2,
        "every_form": ("bf16",),
    },  # every formulation and the chosen one: bf16, the precision
    "copy_shape": (8, 3, 224, 224),
    # issue 20's targets, each run in its own process with its share of the section's time left (skipped where
    # that share is under PEER_RUN_MIN_S, docs/gpu_check_sections.py): per GMAC vs timm at batch 128 in bf16 (the
    # issue's first figure), then fp32 (its fp32 ratios), then with torch.compile DeiT-S / ConViT-S at batch 256
    # against 20% of the H200's dense bf16 peak (790); inference vs timm is the inference section's ConViT part
    "peers": [
        ("--amp bf16 --batch 128 --rounds 3 --train-only --ops", 0.4),  # --ops: operator counts that differ from timm's
        ("--amp off --batch 128 --rounds 3 --train-only", 0.35),
        # the MFU target: vitc's DeiT-S and ConViT-S compiled (two cold inductor compiles), timm's eager DeiT-S
        (
            "--amp bf16 --batch 256 --sizes small --models convit_small --compile-side vitc --train-only --compile "
            "--rounds 3",
            0.75,
        ),
        # the Ti models' eager steps are launch-bound (docs/operator_counts.py): CUDA graphs, if time is left
        ("--amp bf16 --batch 128 --sizes tiny --train-only --compile --compile-mode reduce-overhead --rounds 3", 0.5),
    ],
    # then docs/operator_counts.py on the device (args, share of the time left; at least OPERATOR_RUN_MIN_S)
    "operator_counts": [("--amp bf16", 0.5), ("--amp off --sizes tiny --forward cuda", 1.0)],
    # issue 20: compiled CvT slower than eager on CUDA (k/v merge? SDPA?), CUDA graphs, ConViT-Ti vs timm
    # DeiT-Ti in fp16/fp32 in budget_s; then torch.compile of cvt_13 (fp16, batch 64: compiled CvT against
    # uncompiled) in the compile_reserve_s kept for it (--compile-reserve-s: the other cells stop short of it)
    "inference": {
        "budget_s": 60,
        "compile_reserve_s": 45,
        "args": "--precisions fp16,fp32 --batches 8,64 --peer-batches 1,64 --torch-compile fp16:64 --iterations 20 "
        "--rounds 4 --warmup 3",
        "bench": "-m convit_tiny --compare --cuda-graph --device cuda --autocast fp16 -b 1,64 -n 20 --warmup 3 "
        "--rounds 2",
    },
}
DRY = {
    "bench_models": ("convit_micro",),
    "bench_args": ["-b", "2", "-n", "2", "--warmup", "1", "--rounds", "1"],
    "precisions": ("fp32",),
    "device": "cpu",
    "train": [
        ("convit_micro", "off"),
        ("deit_micro", "off", 'data.dir="@photos" data.stream="stream"'),
        ("convit_micro", "off", 'aug.auto_augment="rand-m9-mstd0.5-inc1"'),
    ],
    "train_set": ["optim.epochs=1", "optim.batch_size=32", "data.fraction=0.05"],
    "photos": 64,
    "feed_timing": "--device cpu --model deit_micro --batch 2 --img 16 --amp off --steps 1 --calls 1 --rounds 1",
    "ratios": {
        "micro": True,
        "batch": 4,
        "amps": ("off",),
        "rounds": 1,
        "steps": 1,
        "warmup": 0,
        "every_form": ("off",),
    },
    "copy_shape": (4, 3, 8, 8),
    "inference": {
        "budget_s": 30,
        "compile_reserve_s": 0,
        "args": "--cvt cvt_micro --img 32 --precisions fp32 --batches 2 --peer-batches 1 --torch-compile fp32:2 "
        "--compile-backend eager --iterations 2 --rounds 1 --warmup 1",
    },
    "operator_counts": [
        ("--amp off --img 32 --sizes tiny", 0.5),
        ("--amp off --img 32 --sizes tiny --forward cpu", 1.0),
    ],
    "peers": [
        (
            "--device cpu --amp off --batch 4 --img 32 --sizes tiny --rounds 1 --steps 1 --iterations 2 "
            "--warmup 0 --ops",
            0.8,
        )
    ],
}
