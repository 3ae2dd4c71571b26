"""The reader role: the verified snapshot it keeps open, the delta tail it merges
for fresh reads, and the HTTP backend that answers Chroma's read routes."""
