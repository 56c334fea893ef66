"""Tests as a user meets the product: the ``provision`` command in a subprocess, the wheel, the
compose file, tokens over a real ``provision serve``. Imports ``testkit``, rarely the product."""
