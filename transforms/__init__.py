"""MONAI-style dictionary transforms that MONAI itself lacks (readers, challenge label codes, augmentations)."""
