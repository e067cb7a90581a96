"""Learned dynamics: deterministic MLP and probabilistic ensemble, normaliser, trainer, diagnostics; ensemble layers."""
from modelrl.models.diagnostics import (
    episodes_from_arrays,
    episodes_from_buffer,
    k_step_error,
    one_step_error,
    predicted_trajectory,
)
from modelrl.models.ensemble import EnsembleModel, Prediction, make_model
from modelrl.models.layers import EnsembleLayerNorm, EnsembleLinear, EnsembleMLP
from modelrl.models.learned import LearnedDynamics
from modelrl.models.normalizer import Normalizer
from modelrl.models.trainer import ModelTrainer

__all__ = [
    "EnsembleModel",
    "EnsembleLinear",
    "EnsembleLayerNorm",
    "EnsembleMLP",
    "Prediction",
    "make_model",
    "Normalizer",
    "ModelTrainer",
    "LearnedDynamics",
    "one_step_error",
    "k_step_error",
    "predicted_trajectory",
    "episodes_from_arrays",
    "episodes_from_buffer",
]
