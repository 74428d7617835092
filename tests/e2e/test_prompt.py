"""On a terminal, a missing password is asked for (hidden); without one, it is an error."""

import fcntl
import os
import pty
import select
import subprocess
import termios
import time

from e2e_support import CLI


def _on_terminal(workspace, args: list[str], answers: list[bytes]) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env["SAFEHOLD_CONFIG"] = str(workspace.config)
    controller, terminal = pty.openpty()
    def own_terminal() -> None:
        # A new session whose controlling terminal is the pty, as in a login shell: getpass
        # talks to /dev/tty, which must be this pty and not whatever runs the tests.
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(CLI + args, stdin=terminal, stdout=terminal, stderr=terminal, env=env,
                               close_fds=True, preexec_fn=own_terminal)
    os.close(terminal)
    output = b""
    pending = list(answers)
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            process.kill()
            raise AssertionError(f"no output for 60 s; so far: {output!r}")
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        output += chunk
        # Click prints the prompt, then getpass turns echo off (flushing pending input) and
        # prints one space: answer after that space, never before.
        if pending and output.endswith(b": "):
            # Answer only once the hidden prompt has turned echo off: getpass flushes
            # input typed before that (TCSAFLUSH), and the answer would be lost.
            deadline = time.monotonic() + 30
            while termios.tcgetattr(controller)[3] & termios.ECHO:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the prompt never turned echo off; so far: {output!r}")
                time.sleep(0.01)
            os.write(controller, pending.pop(0) + b"\n")
    os.close(controller)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_init_and_snapshots_ask_for_the_password_on_a_terminal(workspace):
    code, output = _on_terminal(workspace, ["init"], [b"typed-secret", b"typed-secret"])
    assert code == 0, output
    assert "password for the new repository" in output and "typed-secret" not in output  # hidden input

    code, output = _on_terminal(workspace, ["snapshots"], [b"typed-secret"])
    assert code == 0, output
    assert "0 snapshot(s)" in output

    code, output = _on_terminal(workspace, ["snapshots"], [b"wrong"])
    assert code == 13 and "does not open any key" in output


def test_without_a_terminal_a_missing_password_is_an_error(workspace):
    result = workspace.run("snapshots", code=13, env={"SAFEHOLD_PASSWORD": None})
    assert "no repository password" in result.stderr and "hint:" in result.stderr
