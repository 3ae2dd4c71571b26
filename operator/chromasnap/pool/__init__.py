"""A pool: one bucket root serving many collections, created and deleted through the API."""
