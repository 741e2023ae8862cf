"""pysup: a daemonless container supervisor for compose files."""
__version__ = "0.1.0.dev0"
