"""The README's run command as a newcomer meets it: `bin/run` on the embedded default (SQLite,
filesystem broker), with a var/ of its own so that nothing is shared with a developer's
instance. It must print the URL and a login that works, carry a journey through the web
server and the worker (with its embedded beat), and stop everything on Ctrl-C."""

import re
import signal
import stat

import pytest

from tests.processes import (
    BASE_DIR,
    Browser,
    Processes,
    base_env,
    free_port,
    run_a_journey_over_http,
    wait_until,
)

# Slow: about a minute. It runs SQLite in its own var/ whatever DATABASE_URL says, so CI's
# PostgreSQL pass, which runs the slow tests, covers it.
pytestmark = pytest.mark.slow

START_TIMEOUT = 180  # bin/setup, migrations and collectstatic come first


def test_bin_run_prints_a_working_login_runs_a_journey_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    var = tmp_path / "var"
    # LOAD_DEMO=0: the demo has tests of its own, and this one needs an empty database.
    # A 1 s sweep: the journey's wait ends sooner.
    env = base_env(VAR_DIR=str(var), WEB_PORT=str(port), LOAD_DEMO="0", SWEEP_INTERVAL_SECONDS="1")
    processes = Processes(env, tmp_path)
    http = Browser(f"http://127.0.0.1:{port}")
    try:
        processes.start("run", str(BASE_DIR / "bin" / "run"))

        def healthy():
            status, body = http("GET", "/healthz")
            return body if status == 200 else None

        body = wait_until(healthy, START_TIMEOUT, "/healthz to answer 200", processes)
        assert (body["database"], body["broker"]) == ("ok", "ok")

        password_file = var / "admin-password.txt"
        password = password_file.read_text().strip()
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        output = processes.log("run")
        assert f"Waypoint is starting at http://127.0.0.1:{port}/" in output
        assert f"Log in as user admin, password {password} " in output
        assert (var / "waypoint.sqlite3").exists()
        assert (var / "broker").is_dir()

        status, page = http("GET", "/accounts/login/")
        assert status == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        form = {"csrfmiddlewaretoken": token, "username": "admin", "password": password}
        status, _ = http("POST", "/accounts/login/", form=form)
        assert status == 302
        status, page = http("GET", "/journeys/")
        assert status == 200 and "admin" in page

        run_a_journey_over_http(processes, http, workers=("run",))
    finally:
        codes, left_behind = processes.stop(signal.SIGINT)

    assert not left_behind, processes.logs()
    assert codes["run"] is not None, processes.logs()
    try:
        http("GET", "/healthz")
    except OSError:
        pass  # refused: nothing listens any more
    else:
        raise AssertionError(f"something still answers on port {port}")
