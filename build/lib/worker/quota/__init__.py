"""Spending Plausible's quota exactly: a shared limiter, per-job permits and the scheduler.

- ``windows``: Plausible's fixed windows (an hour and a burst window, aligned to the epoch) and
  which of them a request sent at a given moment may be counted in.
- ``limiter``: permits, taken in the status database before any request goes out, so every
  process on every host shares one count per quota and window.
- ``permits``: the gate one job's requests pass through: the permits reserved for it, more
  when a window rolls over, and what a 429 means.
- ``scheduler``: which waiting job is dispatched next: interactive first, bulk batches
  round-robin, each only when the calls it still needs fit in the current windows.
"""
