"""`jpm_hybrid`: see the package README for what it offers."""

__version__ = "0.1.0"

__all__ = ["__version__"]
