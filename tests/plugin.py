"""Loaded with `-p tests.plugin` before Django starts: keeps the suite away from the user's ~/.aileron."""

import os
import tempfile

os.environ.setdefault("AILERON_HOME", tempfile.mkdtemp(prefix="aileron-test-home-"))
os.environ.pop("AILERON_MODE", None)
