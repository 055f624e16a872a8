"""Utilities of the engine: distributed helpers, logging set-up, random states."""
