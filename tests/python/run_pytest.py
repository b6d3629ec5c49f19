"""Runs pytest on the given test ids for CTest: exit 77 (Skipped) when nothing ran (the kivi
package is not installed, or every test skipped itself), except that in CI (CI=true), where
tools/setup.sh installs the package, its absence is a failure."""

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


class Outcomes:
    """Counts the tests that ran to a pass (a parameter set each)."""

    def __init__(self):
        self.passed = 0

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.passed:
            self.passed += 1


outcomes = Outcomes()
code = int(pytest.main(["-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                        "-rs", *sys.argv[1:]], plugins=[outcomes]))
if code in (0, 5) and outcomes.passed == 0:
    sys.exit(77)  # every test skipped (the reason is printed above), or none was collected
sys.exit(0 if code == 0 else 1)
