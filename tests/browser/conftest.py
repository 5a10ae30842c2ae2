"""The browser tests need a built book and Chromium, so they run only when asked for by path:
`pytest tests/browser` (or `make browser`); a plain `pytest tests` (make unit) leaves this folder out."""

import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def _asked_for(config):
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if not _asked_for(config):
        return True
    return None
