"""Pretrained networks of the field as score models (diffusers pipelines, denoiser adapters)."""

from .adapters import DenoiserModel, DiffusersUNet, unet2d_score_model
from .diffusers import load_diffusers

__all__ = ["DenoiserModel", "DiffusersUNet", "unet2d_score_model", "load_diffusers"]
