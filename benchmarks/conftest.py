from tests.conftest import *  # noqa: F403 - share the artifact fixtures and markers
