"""Runs pytest on the given test ids for CTest: exit 77 (Skipped) when the kivi package is not
installed, except in CI (CI=true), where tools/setup.sh installs it and its absence is a failure."""

import os
import sys

try:
    import kivi  # noqa: F401
except ImportError as e:
    message = (f"the kivi package is not importable ({e}); install it with "
               "`.venv/bin/pip install --no-build-isolation ./python` (tools/setup.sh does)")
    if os.environ.get("CI") == "true":
        print("error: " + message)
        sys.exit(1)
    print("skipped: " + message)
    sys.exit(77)

import pytest  # noqa: E402

code = pytest.main(["-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                    *sys.argv[1:]])
sys.exit({0: 0, 5: 77}.get(int(code), 1))
