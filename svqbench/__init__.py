"""svqbench: benchmarking vector quantization in spatio-temporal forecasting.

    from svqbench import load_run
    run = load_run("my-run")          # a run folder, a run id under results/, or an export folder
    pred = run.forecast(x)            # (B, in_len, C, H, W) physical units -> (B, out_len, C, H, W)
"""
from svqbench.version import __version__

__all__ = ["__version__", "load_run", "load_exported"]


def __getattr__(name: str):
    """`load_run` and `load_exported` are imported on first use, so `import svqbench` stays light."""
    if name == "load_run":
        from svqbench.runs import load_run
        return load_run
    if name == "load_exported":
        from svqbench.runs import load_exported
        return load_exported
    raise AttributeError(f"module 'svqbench' has no attribute {name!r}")
