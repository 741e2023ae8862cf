import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_defaults():
    """A test that runs the CLI configures structlog onto its captured stderr: undo it after."""
    yield
    structlog.reset_defaults()
