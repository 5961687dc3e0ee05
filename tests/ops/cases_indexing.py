"""Op-table rows for the indexing family."""

CASES: list = []
