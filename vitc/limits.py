"""Sanity bounds for sizes that arrive from files and options.

Each sits far above every real use (published configurations, a Jetson's or a datacenter GPU's
batch sizes, phone photos) and far below what would exhaust memory or never return, so that a
hostile or mistyped value is refused before anything is allocated.
"""

from __future__ import annotations

MAX_IMG_SIZE = 4096  # pixels per side of a model's input
MAX_DEPTH = 1000  # blocks of a model
MAX_INT_ARG = 1 << 20  # any other integer constructor argument (widths, heads, classes)
MAX_MODEL_BYTES = 8 << 30  # parameters and buffers of one model; the largest zoo model needs 0.6 GB
MAX_BATCH = 4096  # images per inference or export batch
MAX_CALIB_IMAGES = 100_000  # INT8 calibration images
MAX_SECONDS = 24 * 3600  # any duration option
MAX_IMAGE_PIXELS = 100_000_000  # pixels of one decoded image (a 100 MP photo)
MAX_ASPECT = 50  # longer side / shorter side of one image
