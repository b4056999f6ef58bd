"""Fixtures several unit modules share."""

from tests.unit.test_graph_client import make_client  # noqa: F401 - GraphClient on a mock transport
