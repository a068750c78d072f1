"""The design space: a genotype grammar whose fixed points are the classic CNNs."""
from .errors import GenotypeError
from .graph import export as export_graph
from .graph import to_graph
from .named import families, named, names  # binds `space.named` to the function, not its subpackage
from .network import Complexity, FeatureInfo, build, complexity, trace  # binds `space.trace` to the function
from .resolve import load
from .schema import Genotype, digest, dump, to_yaml

__all__ = ["GenotypeError", "Genotype", "load", "dump", "digest", "to_yaml", "build", "complexity", "trace",
           "Complexity", "to_graph", "export_graph", "named", "names", "families", "FeatureInfo"]
