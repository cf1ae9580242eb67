"""Small utilities shared by every package (atomic file writing, ...)."""
