"""Flower tests (``make flower``): they need the optional extra ``flwr[simulation]``."""
import os

import pytest

pytest.importorskip("flwr", reason="the Flower extra is not installed: make flower")

# no telemetry, no update check, nothing installed at run time (Flower's own switches)
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")   # silences a Ray FutureWarning
