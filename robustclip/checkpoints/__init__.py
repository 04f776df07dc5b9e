"""Checkpoints: the safetensors format with metadata inside, and loading any weights file a user hands us (foreign).
May import core, data, models.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
