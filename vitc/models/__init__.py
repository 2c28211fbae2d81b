"""The model zoo. Importing this package registers every family's entry points."""

from vitc.models import convit, cvt, deit, spvit  # noqa: F401  (registers the entry points)
from vitc.models._registry import (
    ModelCfg,
    build_model,
    create_model,
    get_model_cfg,
    list_models,
    model_cfg,
    register_model,
)

__all__ = ["ModelCfg", "build_model", "create_model", "get_model_cfg", "list_models", "model_cfg", "register_model"]
