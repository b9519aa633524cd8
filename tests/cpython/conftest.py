"""Keep pytest out of this folder.

tests/cpython/ is a stand-alone runner for CPython's own asyncio test suite
(see README.md); it is driven by run.py, not by the main pytest session.
"""

collect_ignore_glob = ["*"]
