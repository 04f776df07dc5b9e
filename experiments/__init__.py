"""Experiments run with robustclip from a source checkout; not part of the installed package."""
