"""``make airflow``: run Airflow standalone on this checkout (scheduler, API server, dag
processor, triggerer) with the newswatch DAGs, and stop all of it cleanly.

Airflow is not imported here: it is started as a child process in its own session, and on
Ctrl-C or SIGTERM the whole process group is terminated (then killed), so nothing is left
running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"  # written by airflow 3.x
URL = "http://localhost:8080"


def airflow_env(repo: Path = REPO, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a local Airflow on this checkout."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["AIRFLOW_HOME"] = env.get("AIRFLOW_HOME") or str(repo / ".airflow")
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(repo / "dags")
    env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(repo / "plugins")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("NEWSWATCH_CONFIG", str(repo / "config" / "newswatch.yaml"))
    return env


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> int:
    """SIGTERM the child's whole process group, wait, then SIGKILL what is left."""
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return proc.wait()
            proc.poll()
            time.sleep(0.2)
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airflow-home", help="default: .airflow in the repository")
    args = parser.parse_args(argv)
    env = airflow_env()
    if args.airflow_home:
        env["AIRFLOW_HOME"] = str(Path(args.airflow_home).resolve())
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow) if airflow.exists() else "airflow", "standalone"]

    print(f"AIRFLOW_HOME={home}\nDAGs: {env['AIRFLOW__CORE__DAGS_FOLDER']}\n"
          f"NEWSWATCH_CONFIG={env['NEWSWATCH_CONFIG']}\n"
          f"UI: {URL} (user admin; password in {home / PASSWORDS_FILE} once started)\n"
          "Ctrl-C stops everything.", flush=True)
    proc = subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True)

    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print(f"\nstopping Airflow ({signal.Signals(signum).name}) …", flush=True)
        stop_group(proc)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    finally:
        if proc.poll() is None or not stopping:
            stop_group(proc)  # the child may have left its own children behind
    return 0 if stopping else (proc.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
