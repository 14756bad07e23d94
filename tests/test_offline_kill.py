"""kill -9 against the offline path: tills killed between queueing and replay, and a server killed
mid-stream while four tills with outboxes keep selling. At the end every checkout is credited exactly
once: each card's balance is the sum of what was sent to it, and no document is stored twice, and none
is half applied (ledger, documents and history agree). Runs on both backends: on PostgreSQL the killed
process is a store server in front of the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from anoncard import Programme, Service
from anoncard.client import Backoff, TillClient
from tests.cli_helpers import execute
from tests.test_crash import consistency_problems
from tests.till_helpers import REPO, ServerProcess, add_till, expected_points, free_port, stream_request

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
TILLS, PER_TILL, SERVER_KILLS = (4, 500, 2) if STRESS else (4, 60, 1)
CARDS = 20
SCRIPT = Path(__file__).with_name("till_stream.py")


def issue(home: Path, count: int, tmp_path: Path) -> tuple[list[str], Path]:
    with Service.open(home) as svc:
        codes = [s.code for s in svc.issue_cards({"count": count})]
    codes_file = tmp_path / "codes.txt"
    codes_file.write_text("\n".join(codes))
    codes_file.chmod(0o600)
    return codes, codes_file


def start_till(
    url: str, key: str, outbox: Path, codes_file: Path, stream: str, n: int, *, drain: bool
) -> subprocess.Popen:
    args = [sys.executable, str(SCRIPT), url, str(outbox), str(codes_file), stream, str(n)]
    env = {**os.environ, "ANONCARD_TILL_KEY": key}
    return subprocess.Popen([*args, *(["--drain"] if drain else [])], stdout=subprocess.PIPE, env=env, cwd=REPO)


def balances(home: Path, codes: list[str]) -> dict[str, int]:
    with Service.open(home) as svc:
        return {c: svc.balance({"card": c}).points for c in codes}


def checkout_documents(home: Path) -> int:
    return execute(home, "SELECT count(*) FROM txns WHERE kind = 'checkout'")[0][0]


def test_a_till_killed_between_queueing_and_replay_loses_nothing_and_doubles_nothing(home, tmp_path):
    codes, codes_file = issue(home, 5, tmp_path)
    key = add_till(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "till.db"
    n = 400
    # 1. the server is down: the till queues, and is killed -9 mid-stream
    till = start_till(url, key, outbox, codes_file, "k", n, drain=False)
    acknowledged = [till.stdout.readline() for _ in range(25)]
    till.send_signal(signal.SIGKILL)
    till.wait()
    acknowledged += till.stdout.read().splitlines(keepends=True)
    till.stdout.close()
    acked = [line.split()[1].decode() for line in acknowledged if line.startswith(b"sent ")]
    assert 25 <= len(acked) < n, len(acked)
    attempted = len(acked) + 1  # the one in flight when the kill came may or may not be queued
    with TillClient(url, key, outbox) as client:
        queued = [q.document for q in client.pending()]
    assert queued[: len(acked)] == acked and len(queued) <= attempted  # nothing lost, order kept
    with ServerProcess(home, port):
        # 2. the server is back: a replaying till is killed -9 too (mid-replay, or after it)
        till = start_till(url, key, outbox, codes_file, "k", 0, drain=True)
        time.sleep(0.3)
        till.send_signal(signal.SIGKILL)
        till.wait()
        till.stdout.close()
        # 3. a new till process finishes the replay
        with TillClient(url, key, outbox) as client:
            report = client.flush(force=True)
            assert report.remaining == 0 and report.dead == [], report
            # every acknowledged checkout is on the server: sending it again credits nothing
            for i in range(len(acked)):
                assert client.checkout(stream_request(codes, "k", i)).result["replayed"] is True
            # the one in flight: either way, after this it is credited once
            client.checkout(stream_request(codes, "k", len(acked)))
    sent = [stream_request(codes, "k", i) for i in range(attempted)]
    want = expected_points(Programme.load(home / "programme.toml"), sent)
    assert balances(home, codes) == {c: want.get(c, 0) for c in codes}
    assert checkout_documents(home) == attempted


def test_four_tills_keep_selling_while_the_server_is_killed_and_every_checkout_counts_once(home, tmp_path):
    codes, codes_file = issue(home, CARDS, tmp_path)
    key = add_till(home)
    server = ServerProcess(home).start()
    tills = [
        start_till(server.url, key, tmp_path / f"till-{t}.db", codes_file, f"till{t}", PER_TILL, drain=True)
        for t in range(TILLS)
    ]
    try:
        lines: list[list[bytes]] = [[] for _ in range(TILLS)]
        for kill in range(1, SERVER_KILLS + 1):
            while len(lines[0]) < PER_TILL * kill // (SERVER_KILLS + 1):  # till 0 paces the kills
                line = tills[0].stdout.readline()
                assert line.startswith(b"sent "), "till 0 stopped early"
                lines[0].append(line)
            server.kill()
            time.sleep(0.5)  # the tills queue meanwhile
            server.start()
        for t, proc in enumerate(tills):
            lines[t] += proc.stdout.read().splitlines(keepends=True)
            assert proc.wait(timeout=600) == 0, f"till {t} failed"
            assert lines[t][-1] == b"drained\n", f"till {t} did not drain its outbox"
            proc.stdout.close()
    finally:
        for proc in tills:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.kill()
    queued = sum(line.endswith(b" queued\n") for out in lines for line in out)
    replayed = sum(int(line.split()[1]) for out in lines for line in out if line.startswith(b"replayed "))
    print(f"queued while the server was down: {queued} of {TILLS * PER_TILL}; replays already credited: {replayed}")
    assert queued >= SERVER_KILLS, "the kills came after the stream: nothing was queued"
    for t in range(TILLS):
        with TillClient(server.url, key, tmp_path / f"till-{t}.db", backoff=Backoff()) as client:
            status = client.status()
            assert (status.queued, status.dead_letters) == (0, []), (t, status)
    sent = [stream_request(codes, f"till{t}", i) for t in range(TILLS) for i in range(PER_TILL)]
    want = expected_points(Programme.load(home / "programme.toml"), sent)
    assert balances(home, codes) == {c: want.get(c, 0) for c in codes}
    assert checkout_documents(home) == TILLS * PER_TILL
    assert consistency_problems(home / "anoncard.db") == []  # ledger, documents and history agree
