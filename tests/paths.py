"""Where the repository and the test fixtures are, for tests at any depth of tests/."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
