"""Op-table rows for the linalg family."""

CASES: list = []
