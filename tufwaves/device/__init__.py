"""The device side of tufwaves: what firmware tooling embeds.

The bundle format (:mod:`~tufwaves.device.bundle`), the membership encodings
(:mod:`~tufwaves.device.membership`) and their Merkle arithmetic
(:mod:`~tufwaves.device.merkle`), the metadata profile both sides share
(:mod:`~tufwaves.device.profile`) and the verifier
(:mod:`~tufwaves.device.verifier`, re-exported as :mod:`tufwaves.verify`).

Nothing here imports the server side, the command line or a database driver;
``pyproject.toml``'s import-linter contracts hold that.
"""
