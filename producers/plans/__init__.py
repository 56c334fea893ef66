"""Desired state: a file saying which sites, goals, shared links, custom properties, guests and
tracker settings an account should have (``desired``), compared with the inventory (after a
live ``refresh``, if asked) into a plan of changes priced in API calls (``planner``), kept,
saved and turned into one batch of jobs (``saved``); the Python API's part of it (``api``)."""
