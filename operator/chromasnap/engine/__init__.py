"""Records: write operations and their validation, the conflict rules, chromadb's
local persistence, and Chroma-exact filters and distances.

The lowest layer: imports neither storage nor any role.
"""
