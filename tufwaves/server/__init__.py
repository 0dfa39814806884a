"""The server side of tufwaves (public API filled in below)."""
