"""The acceptance suite: docs/contract.md checked from the outside, the way an integration or
a marketer uses the product, one module per subject of the contract. Everything goes through
HTTP (`/api/v1/`, the pages) or the management commands; time moves with time-machine and
work is done by `run_due`, the same entry point an operator uses."""

import pytest

# The shared modules assert on the product's answers; registered before they are imported,
# their failures show pytest's detail as a test module's would.
pytest.register_assert_rewrite("tests.contract.public_surface", "tests.contract.sample_journeys")
