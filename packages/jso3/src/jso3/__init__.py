"""`jso3`: diffusion on SO(3) in JAX; see the package README for what it offers."""

from ._src.conditional import ConditionalScoreNet, sample_conditional
from ._src.gnn import EGNN, EGNNOutput, Neighbourhood, knn_neighbourhoods
from ._src.igso3 import (
    IGSO3,
    igso3_angle_log_prob,
    igso3_log_density,
    igso3_sample_angle,
    igso3_tangent_score,
)
from ._src.ode import probability_flow_sample, reverse_sde_sample, sigma_schedule
from ._src.plot import plot_rotations
from ._src.score import (
    ScoreNet,
    dsm_loss,
    load_checkpoint,
    sample_from_score,
    save_checkpoint,
    train_dsm,
)
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
from ._src.toys import Checkerboard, IGSO3Mixture, four_blobs

__version__ = "0.2.0"

__all__ = [
    "EGNN",
    "IGSO3",
    "Checkerboard",
    "ConditionalScoreNet",
    "EGNNOutput",
    "IGSO3Mixture",
    "Neighbourhood",
    "ScoreNet",
    "__version__",
    "axis_angle_to_matrix",
    "dsm_loss",
    "exp",
    "four_blobs",
    "geodesic_distance",
    "hat",
    "igso3_angle_log_prob",
    "igso3_log_density",
    "igso3_sample_angle",
    "igso3_tangent_score",
    "knn_neighbourhoods",
    "load_checkpoint",
    "log",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "plot_rotations",
    "probability_flow_sample",
    "quaternion_to_matrix",
    "reverse_sde_sample",
    "rotation_angle",
    "sample_conditional",
    "sample_from_score",
    "sample_uniform",
    "save_checkpoint",
    "sigma_schedule",
    "train_dsm",
    "vee",
]
