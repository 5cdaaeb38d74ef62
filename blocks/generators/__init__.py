"""Ad generators: the offline renderer (default) and real image providers, one interface."""

from blocks.generators.base import AdGenerator, AdImage, AdRequest, GenerationError, ProductBrief

__all__ = ["AdGenerator", "AdImage", "AdRequest", "GenerationError", "ProductBrief"]
