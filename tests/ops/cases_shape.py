"""Op-table rows for the shape family."""

CASES: list = []
