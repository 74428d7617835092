"""The command server (``safehold serve --commands-only``) against the same commands run in their
own process: the same output and exit code either way; the client's environment, not the server's;
only the same user; derived keys kept only for the right password and forgotten when idle; Ctrl-C
forwarded. Real processes and a real socket; a fast KDF keeps every command well under a second."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safehold.command_server import client
from safehold.repository import Repository
from safehold.repository.backends import open_backend

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
SAFEHOLD = [sys.executable, "-c", "import sys; from safehold.__main__ import run; sys.argv[0] = 'safehold'; run()"]
NOBODY = 65534


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SAFEHOLD_") and k not in ("CMDSRV_PASSWORD", "CMDSRV_SERVER_ONLY")}
    env.update(extra)
    return env


class Server:
    def __init__(self, root: Path, *options: str, env: dict[str, str] | None = None,
                 user: int | None = None) -> None:
        self.socket = root / "state" / "command.sock"
        self.log = root / "server.log"
        command = [*SAFEHOLD, "-c", str(root / "targets.yml"), "serve", "--commands-only", *options]
        if user is not None:
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env or base_env(), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=root)
        deadline = time.monotonic() + 60
        while "serving commands on" not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def served(self) -> int:
        return self.text().count("command process")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def make_site(root: Path, password_env: str = "CMDSRV_PASSWORD") -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("hello\n")
    (root / "data" / "b.bin").write_bytes(os.urandom(3000))
    (root / "state").mkdir(mode=0o700)
    Repository.init(open_backend(str(root / "repo")), b"pw", FAST_KDF)
    config = root / "targets.yml"
    config.write_text(f"repository:\n  url: {root / 'repo'}\n  password_env: {password_env}\n"
                      f"state_dir: {root / 'state'}\ntargets:\n"
                      f"  - {{name: docs, tier: 3, source: {{type: files, paths: [{root / 'data'}]}}}}\n"
                      f"  - {{name: slow, tier: 3, source: {{type: command, run: 'sleep 29.871', name: out.txt}}}}\n")
    return config


def run(args: list[str], *, served: bool, env: dict[str, str], cwd: Path, socket_path: Path,
        stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(env, **({client.SOCKET_ENV: str(socket_path)} if served else {client.NO_SERVER_ENV: "1"}))
    return subprocess.run([*SAFEHOLD, *args], input=stdin, capture_output=True, env=env, cwd=cwd, timeout=120)


def normalized(text: bytes) -> str:
    """Snapshot ids and durations differ between two backups; everything else must not."""
    value = text.decode(errors="replace")
    value = re.sub(r"\b[0-9a-f]{8,64}\b", "ID", value)
    value = re.sub(r"\d+\.\d+s\b", "Ns", value)
    return re.sub(r'"(duration|time|started|finished|started_at|finished_at)": [^,}]+', r'"\1": X', value)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmdsrv")
    make_site(root)
    # The server's own environment holds a wrong password and a variable of its own: a command
    # that saw either would give a different result than in its own process.
    server = Server(root, env=base_env(CMDSRV_PASSWORD="wrong-in-the-server", CMDSRV_SERVER_ONLY="1"))
    first = run(["-c", str(root / "targets.yml"), "backup", "-t", "docs"], served=False,
                env=base_env(CMDSRV_PASSWORD="pw"), cwd=root, socket_path=server.socket)
    assert first.returncode == 0, first.stderr
    yield root, server
    server.stop()


def test_commands_give_the_same_output_and_exit_code_served_or_not(site):
    root, server = site
    env = base_env(CMDSRV_PASSWORD="pw")
    config = str(root / "targets.yml")
    commands = [
        ["--version"],
        ["-c", config, "backup", "-t", "docs"],  # nothing changed since the fixture's backup
        ["-c", config, "snapshots"],
        ["-c", config, "snapshots", "--json"],
        ["-c", config, "backup", "-t", "nope"],  # an expected failure: its own exit code
        ["-c", config, "snapshots", "--bogus"],  # a usage error: exit 2
        ["snapshots"],  # no configuration where the working directory says: cwd comes from the client
    ]
    before = server.served()
    for number, command in enumerate(commands):
        order = (True, False) if number % 2 else (False, True)
        results = {served: run(command, served=served, env=env, cwd=root, socket_path=server.socket)
                   for served in order}
        assert results[True].returncode == results[False].returncode, (command, results)
        assert normalized(results[True].stdout) == normalized(results[False].stdout), command
        assert normalized(results[True].stderr) == normalized(results[False].stderr), command
    assert server.served() == before + len(commands)  # every served run really went through the server
    assert "pw" not in re.sub(r"\bpw\w", "", server.text()).split()  # no secret in the server's log

    restored = {}
    for served in (True, False):
        target = root / f"restored-{served}"
        answer = run(["-c", config, "restore", "latest:docs", "--to", str(target)], served=served, env=env,
                     cwd=root, socket_path=server.socket)
        assert answer.returncode == 0, answer.stderr
        restored[served] = sorted((p.relative_to(target).as_posix(), p.read_bytes())
                                  for p in target.rglob("*") if p.is_file())
    assert restored[True] == restored[False] and len(restored[True]) == 2


def test_a_command_runs_with_the_clients_environment_never_the_servers(site):
    root, server = site
    config = str(root / "targets.yml")
    # The password is only in the client's environment: the command succeeds through the server,
    # whose own environment has a wrong one.
    served = run(["-c", config, "snapshots", "--json"], served=True, env=base_env(CMDSRV_PASSWORD="pw"), cwd=root,
                 socket_path=server.socket)
    assert served.returncode == 0, served.stderr
    # Without it in the client, the command fails as it does alone (the server's variable is not used).
    served = run(["-c", config, "snapshots"], served=True, env=base_env(), cwd=root, socket_path=server.socket)
    alone = run(["-c", config, "snapshots"], served=False, env=base_env(), cwd=root, socket_path=server.socket)
    assert served.returncode == alone.returncode != 0
    assert served.stderr == alone.stderr and b"CMDSRV_PASSWORD" in served.stderr
    # A program the command runs sees the client's environment too (a command source's output).
    probe = root / "probe.yml"
    probe.write_text(config_text := (root / "targets.yml").read_text().replace(
        "run: 'sleep 29.871'", "run: 'env | sort | grep CMDSRV_'"))
    assert config_text
    env = base_env(CMDSRV_PASSWORD="pw", CMDSRV_CLIENT_ONLY="yes")
    assert run(["-c", str(probe), "backup", "-t", "slow"], served=True, env=env, cwd=root,
               socket_path=server.socket).returncode == 0
    restored = run(["-c", str(probe), "restore", "latest:slow", "--to", str(root / "env-out")], served=False,
                   env=env, cwd=root, socket_path=server.socket)
    assert restored.returncode == 0, restored.stderr
    seen = b"".join(p.read_bytes() for p in (root / "env-out").rglob("*") if p.is_file())
    assert b"CMDSRV_CLIENT_ONLY=yes" in seen and b"CMDSRV_SERVER_ONLY" not in seen
    assert b"wrong-in-the-server" not in seen


def sleepers() -> int:
    lines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return sum(1 for line in lines if line.strip() == "sleep 29.871")


def test_ctrl_c_is_forwarded_and_ends_the_command_as_it_would_alone(site):
    """Ctrl-C as a terminal sends it: to the client's whole process group. In its own process the
    command and the program it runs get it; served, the client forwards it to the command's group
    in the server (the command and its program): the same end either way."""
    root, server = site
    results = {}
    for served in (True, False):
        env = dict(base_env(CMDSRV_PASSWORD="pw"),
                   **({client.SOCKET_ENV: str(server.socket)} if served else {client.NO_SERVER_ENV: "1"}))
        deadline = time.monotonic() + 30
        while sleepers():  # the previous run's program is gone
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process = subprocess.Popen([*SAFEHOLD, "-c", str(root / "targets.yml"), "backup", "-t", "slow"], env=env,
                                   cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        while not sleepers():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        time.sleep(0.3)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
        results[served] = (process.returncode, out, err)
    assert results[True][0] == results[False][0] != 0
    assert normalized(results[True][2]) == normalized(results[False][2])


def test_derived_keys_are_kept_for_the_right_password_only_and_forgotten_when_idle(tmp_path):
    config = make_site(tmp_path)
    server = Server(tmp_path, "--key-cache-idle", "2")
    try:
        command = ["-c", str(config), "snapshots", "--json"]
        right = base_env(CMDSRV_PASSWORD="pw")
        assert run(command, served=True, env=right, cwd=tmp_path, socket_path=server.socket).returncode == 0
        assert "keeping a derived key (1 in all)" in server.text()
        wrong = {served: run(command, served=served, env=base_env(CMDSRV_PASSWORD="not-pw"), cwd=tmp_path,
                             socket_path=server.socket) for served in (True, False)}
        assert wrong[True].returncode == wrong[False].returncode != 0  # no key for a wrong password
        assert wrong[True].stderr == wrong[False].stderr
        # Every key kept is forgotten once no command came for 2 s. On a loaded machine the idle
        # time may already pass between two of the commands above, so count, not one line.
        deadline = time.monotonic() + 20
        while True:
            text = server.text()
            kept = text.count("keeping a derived key (")
            forgotten = sum(int(n) for n in re.findall(r"forgot (\d+) derived key\(s\): no command for 2 s", text))
            if kept and forgotten == kept:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    finally:
        server.stop()
    assert not server.socket.exists()  # removed when the server stops


def test_no_key_is_kept_with_a_zero_idle_time(tmp_path):
    config = make_site(tmp_path)
    server = Server(tmp_path, "--key-cache-idle", "0")
    try:
        answer = run(["-c", str(config), "snapshots"], served=True, env=base_env(CMDSRV_PASSWORD="pw"),
                     cwd=tmp_path, socket_path=server.socket)
        assert answer.returncode == 0 and server.served() == 1
        assert "keeping a derived key" not in server.text() and "derived keys kept never" in server.text()
    finally:
        server.stop()


def request_body() -> bytes:
    """A request a real client would send (its identity computed as the safehold command's: this
    test process's import path is pytest's, not the command's)."""
    identity = json.loads(subprocess.run(
        [sys.executable, "-c", "import json; from safehold.command_server.client import identity; "
                               "print(json.dumps(identity()))"], capture_output=True, text=True, check=True).stdout)
    return json.dumps({"protocol": client.PROTOCOL, "identity": identity, "argv": ["safehold", "--version"],
                       "env": {}, "umask": 0o22, "stdio": {}}).encode()


def send_request(server, root, document: dict) -> socket.socket:
    """Open the server's socket and send ``document`` as a client does: its length with the
    standard streams and the working directory as file descriptors, then the body."""
    import array
    import struct

    body = json.dumps(document).encode()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(20)
    connection.connect(str(server.socket))
    fds = array.array("i", [0, 1, 2, os.open(root, os.O_RDONLY)])
    connection.sendmsg([struct.pack(">I", len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    connection.sendall(body)
    return connection


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_only_the_same_user_can_use_the_socket(site, tmp_path):
    root, server = site
    # Another user cannot even reach the socket (0600 in a 0700 directory) ...
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n"
             "except PermissionError:\n    print('denied')\nelse:\n    print('connected')\n")
    answer = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                             "-c", probe, str(server.socket)], capture_output=True, text=True, timeout=60)
    assert answer.stdout.strip() == "denied", answer
    # ... and a server checks the peer's uid itself (root can connect to anything): a server run by
    # nobody refuses root's connection before reading anything, and root's client, which checks the
    # server's uid too, runs the command itself with the same result.
    import tempfile

    other = Path(tempfile.mkdtemp(prefix="safehold-cmdsrv-", dir="/tmp"))  # pytest's folders are root's only
    make_site(other)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(other)], check=True)
    nobody = Server(other, user=NOBODY)
    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(20)
        connection.connect(str(nobody.socket))
        try:
            connection.sendall(b"\0\0\0\0")
            assert connection.recv(1) == b""  # closed without an answer
        except ConnectionResetError:
            pass
        connection.close()
        answer = run(["--version"], served=True, env=base_env(), cwd=tmp_path, socket_path=nobody.socket)
        assert (answer.returncode, answer.stdout) == (0, b"safehold 0.1.0\n")
        deadline = time.monotonic() + 10
        while nobody.text().count(f"refused a connection from uid 0") < 2:
            assert time.monotonic() < deadline, nobody.text()
            time.sleep(0.1)
        assert nobody.served() == 0
    finally:
        nobody.stop()
        import shutil

        shutil.rmtree(other, ignore_errors=True)


def test_a_request_from_another_build_is_refused_and_runs_locally(site):
    root, server = site
    for version, answer in (("0.0.0-other", b"R"), (None, b"S")):  # refused only for the other build
        document = json.loads(request_body())
        if version:
            document["identity"]["version"] = version
        connection = send_request(server, root, document)
        assert connection.recv(1) == answer, version
        connection.close()  # (no go-ahead: the accepted one runs nothing)


def test_the_socket_directory_must_be_private(tmp_path):
    config = make_site(tmp_path)
    os.chmod(tmp_path / "state", 0o755)
    answer = subprocess.run([*SAFEHOLD, "-c", str(config), "serve", "--commands-only"], capture_output=True,
                            env=base_env(), timeout=60, cwd=tmp_path)
    assert answer.returncode == 94, answer.stderr
    assert b"mode 755" in answer.stderr and not (tmp_path / "state" / "command.sock").exists()


def test_serve_with_commands_forks_the_command_server_and_it_ends_with_the_server(tmp_path):
    """'safehold serve --commands': the control plane and the command server beside it; when the
    server stops, the command server removes its socket and ends too."""
    config = make_site(tmp_path)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen([*SAFEHOLD, "-c", str(config), "serve", "--commands", "--port", "0",
                                  "--no-scheduler"], env=base_env(CMDSRV_PASSWORD="pw", SAFEHOLD_NO_SERVER="1"),
                                 stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "Uvicorn running" not in log_path.read_text(errors="replace"):
            assert serve.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        socket_path = tmp_path / "state" / "command.sock"
        assert (socket_path.stat().st_mode & 0o777) == 0o600
        answer = run(["-c", str(config), "snapshots", "--json"], served=True, env=base_env(CMDSRV_PASSWORD="pw"),
                     cwd=tmp_path, socket_path=socket_path)
        assert answer.returncode == 0 and json.loads(answer.stdout) == []
        assert "command process" in log_path.read_text(errors="replace")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    deadline = time.monotonic() + 20
    while "the server ended: the command server stops" not in log_path.read_text(errors="replace") \
            or socket_path.exists():
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.1)


def test_a_password_prompt_reads_the_clients_terminal_without_echo(site):
    """No password variable and a terminal on stdin: the password typed on the client's terminal
    is read with echo off, served or not (the command's process has no controlling terminal in
    either case here, as in the server: getpass falls back to the stdin terminal; Click writes the
    prompt's text on stdout)."""
    import pty
    import select

    root, server = site
    seen = {}
    for served in (True, False):
        master, slave = pty.openpty()
        env = dict(base_env(), **({client.SOCKET_ENV: str(server.socket)} if served else {client.NO_SERVER_ENV: "1"}))
        process = subprocess.Popen([*SAFEHOLD, "-c", str(root / "targets.yml"), "snapshots", "--json"], stdin=slave,
                                   stdout=subprocess.PIPE, stderr=slave, env=env, cwd=root, start_new_session=True)
        os.close(slave)
        terminal = b""
        typed = False
        deadline = time.monotonic() + 60
        while process.poll() is None:
            assert time.monotonic() < deadline, terminal
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    terminal += os.read(master, 1024)
                except OSError:
                    break
            if terminal and not typed:  # getpass's prompt (a blank): echo is off by now
                os.write(master, b"pw\n")
                typed = True
        out = process.stdout.read()
        process.wait(timeout=60)
        while select.select([master], [], [], 0.2)[0]:
            try:
                terminal += os.read(master, 1024)
            except OSError:
                break
        os.close(master)
        assert process.returncode == 0, terminal
        seen[served] = (out, b"pw" in terminal)
    assert seen[True] == seen[False]
    assert seen[True][1] is False and seen[True][0].startswith(b"repository password:")


def test_a_client_that_gives_up_before_the_go_ahead_runs_nothing_in_the_server(site):
    """The client runs the command itself when the server is late; the server's child then must
    not run it too: it waits for the client's go-ahead (G) after saying it is ready (S). (Without
    the go-ahead the hang-up on a closed connection would still stop it here, but only after the
    command had started: the handshake makes "never both" hold by construction.)"""
    root, server = site
    target = root / "must-not-exist"
    document = json.loads(request_body())
    document["argv"] = ["safehold", "-c", str(root / "targets.yml"), "restore", "latest:docs", "--to", str(target)]
    document["env"] = base_env(CMDSRV_PASSWORD="pw")
    before = server.served()
    connection = send_request(server, root, document)
    assert connection.recv(1) == b"S"
    connection.close()  # gave up: no G
    deadline = time.monotonic() + 20
    while server.served() == before:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not target.exists()
