"""The status table: jobs, their states and what callers see of them."""
