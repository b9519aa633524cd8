"""tokioloop: a drop-in replacement for the asyncio event loop, in Rust on tokio.

Use it with ``asyncio.run(main(), loop_factory=tokioloop.new_event_loop)``,
``tokioloop.run(main())`` or ``asyncio.set_event_loop_policy(tokioloop.EventLoopPolicy())``.
"""

from ._loop import Loop
from ._policy import EventLoopPolicy, install, new_event_loop, run
from ._tokioloop import Handle, TimerHandle, __version__

__all__ = [
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "TimerHandle",
    "__version__",
    "install",
    "new_event_loop",
    "run",
]
