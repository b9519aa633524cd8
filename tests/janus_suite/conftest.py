"""Keep pytest out of this folder.

tests/janus_suite/ is a stand-alone runner for janus's test suite
(see run.py); it is driven by run.py, not by the main pytest session.
"""

collect_ignore_glob = ["*"]
