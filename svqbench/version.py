"""The version of svqbench, in a module of its own so that any module can record it without importing the
package facade (svqbench/__init__.py), which imports runs and export on first use."""
__version__ = "0.1.0"
