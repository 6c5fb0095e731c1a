"""Expand-and-Cluster (Martinelli et al., ICML 2024): recover an MLP's weights and layer sizes from its
input-output map by clustering the hidden neurons of overparameterised students (docs/recover.md)."""

from typing import TYPE_CHECKING

from weightsim.lazy import lazy_exports

if TYPE_CHECKING:  # at run time each name is imported on first use (weightsim/lazy.py)
    from weightsim.recover.cluster import Clusters, cluster_layer
    from weightsim.recover.ec import Recovered, expand_and_cluster
    from weightsim.recover.metrics import recovery_metrics
    from weightsim.recover.students import Students, init_students, train
    from weightsim.recover.symmetry import canonicalize
    from weightsim.recover.teachers import Problem, gaussian_problem, synthetic_teacher, zoo_problem

__all__ = ["Clusters", "cluster_layer", "Recovered", "expand_and_cluster", "recovery_metrics", "Students",
           "init_students", "train", "canonicalize", "Problem", "gaussian_problem", "synthetic_teacher",
           "zoo_problem"]
__getattr__ = lazy_exports(__name__, {
    "Clusters": ".cluster", "cluster_layer": ".cluster", "Recovered": ".ec", "expand_and_cluster": ".ec",
    "recovery_metrics": ".metrics", "Students": ".students", "init_students": ".students", "train": ".students",
    "canonicalize": ".symmetry", **dict.fromkeys(["Problem", "gaussian_problem", "synthetic_teacher", "zoo_problem"],
                                                 ".teachers")})
