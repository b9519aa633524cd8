"""Keep pytest out of this folder.

tests/aioquic_suite/ is a stand-alone runner for aioquic's test suite
(see run.py); it is driven by run.py, not by the main pytest session.
"""

collect_ignore_glob = ["*"]
