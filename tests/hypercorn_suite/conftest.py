"""Keep pytest out of this folder.

tests/hypercorn_suite/ is a stand-alone runner for hypercorn's test suite
(see run.py); it is driven by run.py, not by the main pytest session.
"""

collect_ignore_glob = ["*"]
