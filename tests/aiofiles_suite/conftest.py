"""Keep pytest out of this folder.

tests/aiofiles_suite/ is a stand-alone runner for aiofiles's test suite
(see run.py); it is driven by run.py, not by the main pytest session.
"""

collect_ignore_glob = ["*"]
