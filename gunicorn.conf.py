# gunicorn reads this file from the working directory (the Procfile's web process runs from
# the checkout): its access and error lines mask email addresses (config/access_log.py).
import os

logger_class = "config.access_log.MaskingGunicornLogger"

# Threads, not sync workers: a sync worker belongs to one connection until that client has
# sent its whole request, so three idle sockets froze the web (/healthz took 34 s). A gthread
# worker waits for a connection's first bytes in its poller (after 5 s in a thread), so idle
# sockets cost nothing; a client that sent part of a request holds one thread until it sends
# the rest, which is why the TLS proxy in front must buffer requests (docs/operations.md).
# Each thread may keep a database connection: workers x threads per machine count against
# PostgreSQL's max_connections. Measured in tests/test_web_server.py.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))

# The longest request line gunicorn accepts (8190 is its maximum short of unlimited; its
# default of 4094 answered a long /api/ URL with an HTML 414). Django answers URLs over
# API_MAX_URL_LENGTH under /api/ with the API's JSON 414 (config/security.py).
limit_request_line = 8190
