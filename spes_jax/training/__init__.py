"""Recipes that build the embedded default models: synthetic speech data and training."""
