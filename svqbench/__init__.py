"""svqbench: benchmarking vector quantization in spatio-temporal forecasting."""
__version__ = "0.1.0"
