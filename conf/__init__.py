"""Hydra config tree (shipped as package data)."""
