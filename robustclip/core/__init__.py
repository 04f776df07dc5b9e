"""Plumbing every layer may use: atomic files and bounded readers, input validation, progress, devices, model modes,
metric keys. Imports nothing of robustclip but the leaf modules (errors, exitcodes, stats, _version)."""
