"""Chroma's v2 HTTP API for one collection, shared by the writer and reader
servers: routing, request parsing, responses, errors and auth."""
