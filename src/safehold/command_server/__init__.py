"""The command server: a pre-loaded process that runs ``safehold`` commands for the same user, as
Mercurial's chg or a zygote does (design note: docs/design/command-server.md).

Concepts: ``client`` (the tiny path the ``safehold`` entry point takes first: standard library
only, it hands the command's argv, working directory, environment and standard streams over a Unix
socket and returns the command's exit status, or tells the entry point to run the command itself)
and ``zygote`` (the process ``safehold serve --commands`` forks before it starts any thread: it
imports the CLI, the engine and the configuration models once, then forks a child per command that
becomes the client's process and runs the normal CLI; it keeps the derived repository keys its
children send back until an idle timeout).
"""
