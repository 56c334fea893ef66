"""One module per schema version, in order; each upgrade works on SQLite and PostgreSQL."""
