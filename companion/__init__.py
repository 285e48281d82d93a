"""Companion package of *Training deep networks that actually train*."""
__version__ = "0.1.0"
