"""Model zoos: many seeds of one architecture per learning task, stored as safetensors."""

from weightsim.zoo.generate import ZooConfig, generate_zoo
from weightsim.zoo.store import ZooReader, ZooWriter
from weightsim.zoo.view import Zoo, hidden_layers

__all__ = ["ZooConfig", "generate_zoo", "ZooReader", "ZooWriter", "Zoo", "hidden_layers"]
