"""`jso3`: diffusion on SO(3) in JAX; see the package README for what it offers."""

from ._src.igso3 import (
    IGSO3,
    igso3_angle_log_prob,
    igso3_log_density,
    igso3_sample_angle,
    igso3_tangent_score,
)
from ._src.ode import probability_flow_sample, sigma_schedule
from ._src.so3 import (
    axis_angle_to_matrix,
    exp,
    geodesic_distance,
    hat,
    log,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_angle,
    sample_uniform,
    vee,
)

__version__ = "0.1.0"

__all__ = [
    "IGSO3",
    "__version__",
    "axis_angle_to_matrix",
    "exp",
    "geodesic_distance",
    "hat",
    "igso3_angle_log_prob",
    "igso3_log_density",
    "igso3_sample_angle",
    "igso3_tangent_score",
    "log",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "probability_flow_sample",
    "quaternion_to_matrix",
    "rotation_angle",
    "sample_uniform",
    "sigma_schedule",
    "vee",
]
