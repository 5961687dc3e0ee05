"""Op-table rows for the reduce family."""

CASES: list = []
