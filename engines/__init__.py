"""Ignite workflows (MONAI engine subclasses): semi-supervised trainers and batch inference."""
