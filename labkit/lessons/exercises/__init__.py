"""The exercises of each chapter, with their solutions (``chNN.py``); `labkit.check` marks the answers."""
