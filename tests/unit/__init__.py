"""Tests of one process: the product's code in memory, SQLite files, fakeredis, the HTTP app in
process. Imports the product and ``testkit``."""
