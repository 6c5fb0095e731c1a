"""Model zoos: many seeds of one architecture per learning task, stored as safetensors; nets trained
elsewhere come in through ``import_nets`` (zoo/importer.py)."""

from typing import TYPE_CHECKING

from weightsim.lazy import lazy_exports

if TYPE_CHECKING:  # at run time each name is imported on first use (weightsim/lazy.py)
    from weightsim.zoo.generate import generate_zoo
    from weightsim.zoo.importer import import_nets
    from weightsim.zoo.options import ZooConfig
    from weightsim.zoo.store import ZooReader, ZooWriter
    from weightsim.zoo.view import Zoo, hidden_layers

__all__ = ["ZooConfig", "generate_zoo", "import_nets", "ZooReader", "ZooWriter", "Zoo", "hidden_layers"]
__getattr__ = lazy_exports(__name__, {"ZooConfig": ".options", "generate_zoo": ".generate", "import_nets": ".importer",
                                      "ZooReader": ".store", "ZooWriter": ".store", "Zoo": ".view",
                                      "hidden_layers": ".view"})
