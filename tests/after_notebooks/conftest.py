"""Tests that read the records the chapters have just written, so they run after the chapters (``make
agreement``, the last part of ``make test``), only when asked for by path: a plain ``pytest tests`` (make
unit) leaves this folder out (see ``ONLY_WHEN_ASKED`` in ``tests/conftest.py``)."""
