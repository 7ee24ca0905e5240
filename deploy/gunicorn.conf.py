"""gunicorn settings for production: `gunicorn -c deploy/gunicorn.conf.py portal.wsgi`."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
# An API request spends much of its time waiting on PostgreSQL and Redis (more so on a busy
# host, where each round trip waits for the other process to be scheduled): 8 threads keep a
# worker's CPU busy meanwhile. Each thread holds its own database connection (DB_CONN_MAX_AGE):
# workers x threads must stay under PostgreSQL's max_connections.
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
# Each worker listens on its own socket (SO_REUSEPORT) and the kernel spreads new connections
# over them. On one shared socket the first worker to wake accepts them: a script's kept-alive
# connections could all land on one worker, one core, while the other idled.
reuse_port = True
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = "-"
# gunicorn's logger, writing the same lines from only the atoms the format names (gunicorn's own
# built every header and environ entry as an atom: about 6% of a single-job POST's CPU).
logger_class = "portal.access_log.AccessLogger"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker: object) -> None:
    """The application is loaded: move everything allocated so far (modules, settings, URL
    patterns) out of the garbage collector's view. A full collection then walks only what
    requests allocate, instead of the ~200,000 objects of Django and the app each time."""
    import gc

    gc.freeze()
