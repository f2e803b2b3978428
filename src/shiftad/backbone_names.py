"""Backbone names, without importing torch: what the DAG's wiring (Snakefile, pipeline) needs to
know about a backbone before any job runs."""

from __future__ import annotations

# torch hub names of the DINOv2 models -> the same architectures in timm
TORCH_HUB_ALIASES = {
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2_vitl14": "vit_large_patch14_dinov2.lvd142m",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2.lvd142m",
}


def is_vision_transformer(name: str) -> bool:
    """ViT names (DINOv2 ``vit_small_patch14_dinov2.lvd142m`` or torch hub ``dinov2_vits14``…): patch tokens, not layers."""
    return TORCH_HUB_ALIASES.get(name, name).split("/")[-1].startswith(("vit_", "deit", "eva"))
