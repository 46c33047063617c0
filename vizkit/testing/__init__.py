"""Helpers for vizkit's tests and for checking vizkit against references, as ``captum.testing`` is for Captum.
Nothing in the runtime package imports from here."""
