"""Keep pytest out of this folder.

tests/pyzmq_suite/ is a stand-alone runner for pyzmq's test suite
(see run.py); it is driven by run.py, not by the main pytest session.
"""

collect_ignore_glob = ["*"]
