"""Real-browser tests: JupyterLab served on loopback, driven by Playwright in Debian's Chromium."""
