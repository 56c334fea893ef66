"""The dashboard in a real browser (Debian's Chromium through Playwright): sign-in, sessions,
actions, screenshots for the docs."""
