from tests.browser import chromium, pages  # noqa: F401  (fixtures)
