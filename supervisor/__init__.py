"""pysup: a daemonless container supervisor for compose files."""
__version__ = "0.1.0.dev0"


class _StructlogWithoutRich:
    """structlog.dev imports rich (and pygments) when it is installed, only to draw tracebacks:
    ~4 MB of a long-running `pysup up` for tracebacks pysup never prints that way. While
    structlog.dev is imported, `rich` reads as not installed (structlog then formats tracebacks
    itself); rich stays importable for everything else (image pull progress). A one-shot meta path
    finder: it removes itself."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name != "structlog.dev":
            return None
        import sys

        sys.meta_path.remove(self)
        if "rich" in sys.modules:
            return None
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader

        class Loader:
            def create_module(self, spec):  # noqa: ANN001, ANN201
                return real.create_module(spec)

            def exec_module(self, module):  # noqa: ANN001, ANN201
                sys.modules["rich"] = None  # type: ignore[assignment]
                try:
                    real.exec_module(module)
                finally:
                    if sys.modules.get("rich", 0) is None:
                        del sys.modules["rich"]

        spec.loader = Loader()
        return spec


def _install() -> None:
    import sys

    if "structlog" not in sys.modules:
        sys.meta_path.insert(0, _StructlogWithoutRich())


_install()
