"""gbmi: compact proofs of model performance via mechanistic interpretability.

The public API.  Importing this module does not import torch or transformer_lens.
"""

import pluggy

from .errors import (CertificateRejected, ConfigError, CorruptEntry, DuplicateName, GbmiError, MemoryRefused, NotApplicable,
                     ModelRefused, PluginLoadError, StoreError, TooLarge, UnknownName)
from .bundle import CheckResult, check
from .hookspecs import PROJECT_NAME
from .lazy import lazy
from .memory import memory_budget
from .records import Bound, Certificate, FigureSpec, ModelSpec, ProofResult, StrategySpec, TaskSpec, TrainedModel, TrainerSpec
from .registry import Registry, Strategy, get_registry
from .results import results_frame
from .schema import ArrayField, CertificateSchema, ScalarField
from .store import Store, default_store_path

#: The marker plugins put on their hook implementations: ``@gbmi_core.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "ArrayField", "Bound", "Certificate", "CertificateSchema", "ScalarField", "FigureSpec", "CertificateRejected", "CheckResult", "check", "ConfigError", "CorruptEntry", "DuplicateName", "GbmiError", "MemoryRefused", "memory_budget",
    "ModelRefused", "ModelSpec", "NotApplicable", "PluginLoadError", "ProofResult", "Registry", "Store", "StoreError", "Strategy",
    "StrategySpec", "TaskSpec", "TooLarge", "TrainedModel", "TrainerSpec", "UnknownName", "default_store_path",
    "get_registry", "hookimpl", "lazy", "results_frame",
]
