"""docs/contract.md is the shared contract copied verbatim, kept in step with it: the code and
docs cite its sections (docs/contract.md §n), so a copy that drifted would send them to text
the acceptance suite no longer proves."""

from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
COPY = REPOSITORY / "docs/contract.md"
SHARED = REPOSITORY.parent / "shared/docs/CONTRACT.md"


def test_docs_contract_is_a_byte_identical_copy_of_the_shared_contract():
    if not SHARED.is_file():
        pytest.skip(
            f"{SHARED} is absent (a clone without the shared folder): nothing to compare "
            "docs/contract.md with"
        )
    assert COPY.read_bytes() == SHARED.read_bytes(), (
        f"docs/contract.md differs from {SHARED}: copy the shared file over it unchanged"
    )
