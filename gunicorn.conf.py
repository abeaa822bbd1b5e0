"""gunicorn settings for Tally (``gunicorn config.wsgi`` reads this file from the cwd).

Threads matter for ingestion: single events that arrive together in one process share a
commit (metering.ingestion.GroupCommit), so a few processes with many threads each take
more events per second than many single-threaded ones. Override with GUNICORN_* variables.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
timeout = 120


def post_worker_init(worker):
    """The app is loaded: move its objects out of the cyclic GC's reach, so collections
    triggered by a big request do not rescan all of Django each time."""
    import gc

    gc.freeze()
