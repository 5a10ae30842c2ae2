"""The browser tests need a built book and Chromium, so they run only when asked for by path:
`pytest tests/browser` (or `make browser`); a plain `pytest tests` (make unit) leaves this folder out
(see ``ONLY_WHEN_ASKED`` in ``tests/conftest.py``)."""
