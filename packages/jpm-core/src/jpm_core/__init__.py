"""`jpm_core`: distributed, differentiable particle-mesh N-body simulations in JAX.

See the package README for what it offers; everything exported here is public API, everything under
`jpm_core._src` is private.
"""

__version__ = "0.1.0"

# --- cosmology exports (begin) ---
# --- cosmology exports (end) ---

# --- mesh exports (begin) ---
# --- mesh exports (end) ---

__all__ = [
    "__version__",
    # --- cosmology __all__ (begin) ---
    # --- cosmology __all__ (end) ---
    # --- mesh __all__ (begin) ---
    # --- mesh __all__ (end) ---
]
