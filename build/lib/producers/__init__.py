"""Producers: everything that enqueues provisioning jobs or reads their status."""
