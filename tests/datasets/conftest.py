from tests.datasets.projects import cars, hitters, penguins  # noqa: F401 - session fixtures
