"""Desired state: a file saying which sites, goals and shared links an account should have
(``desired``), compared with the inventory into a plan of changes priced in API calls
(``planner``), saved and turned into one batch of jobs (``saved``)."""
