"""Small shared helpers (atomic file writes, safe checkpoint reading)."""
