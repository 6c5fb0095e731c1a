"""Model zoos: many seeds of one architecture per learning task, stored as safetensors; nets trained
elsewhere come in through ``import_nets`` (zoo/importer.py)."""

from weightsim.zoo.generate import ZooConfig, generate_zoo
from weightsim.zoo.importer import import_nets
from weightsim.zoo.store import ZooReader, ZooWriter
from weightsim.zoo.view import Zoo, hidden_layers

__all__ = ["ZooConfig", "generate_zoo", "import_nets", "ZooReader", "ZooWriter", "Zoo", "hidden_layers"]
