import pytest


@pytest.fixture(autouse=True)
def browser_role_groups(transactional_db, role_groups):
    # Users made inside these tests (not only the role fixtures) need the groups back after
    # the previous transactional test's flush.
    return role_groups
