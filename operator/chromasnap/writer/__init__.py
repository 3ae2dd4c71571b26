"""The writer role: group commit of client writes into durable deltas, and the
HTTP backend that acknowledges them and tells readers about new deltas."""
