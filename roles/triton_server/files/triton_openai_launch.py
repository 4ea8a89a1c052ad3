# SPDX-License-Identifier: Apache-2.0
"""Starts Triton's OpenAI-compatible frontend with its API key kept off the command line.

Installed by the onprem.triton.triton_server role and run in the server's container as
    python3 triton_openai_launch.py /opt/tritonserver/python/openai/openai_frontend/main.py FLAG...

Why: the frontend takes its key only as a flag (--openai-restricted-api APIS HEADER VALUE,
python/openai/openai_frontend/main.py), and a flag is readable by every user of the host in
/proc/PID/cmdline and in `docker inspect`. This launcher reads the key from TRITON_OPENAI_API_KEY
(the role's 0600 env file), removes it from the environment (the model processes never see it),
adds the flag to sys.argv inside this process and runs main.py in it: the kernel's copy of the
command line never holds the key.

The key protects the inference and model-repository APIs (the /v1/... endpoints): clients send
`Authorization: Bearer KEY`, as the openai client does. /health/ready and /metrics stay open for
the gateways' health checks and Prometheus. Standard library only.
"""

import os
import runpy
import sys

KEY_VARIABLE = "TRITON_OPENAI_API_KEY"
RESTRICTED_APIS = "inference,model-repository"
HEADER = "authorization"


def frontend_argv(argv, environ):
    """The argv main.py gets: its own flags plus the key's restriction. Takes the key out of environ."""
    if len(argv) < 2:
        raise SystemExit("usage: triton_openai_launch.py MAIN.PY [FLAG...]")
    main, flags = argv[1], argv[2:]
    if any(flag.split("=", 1)[0] == "--openai-restricted-api" for flag in flags):
        raise SystemExit("triton_openai_launch: --openai-restricted-api must not be given on the command line "
                         "(it would show the key); the launcher sets it from %s" % KEY_VARIABLE)
    key = environ.pop(KEY_VARIABLE, "")
    if not key:
        raise SystemExit("triton_openai_launch: %s is empty: refusing to serve the OpenAI API without a key" % KEY_VARIABLE)
    return [main] + flags + ["--openai-restricted-api", RESTRICTED_APIS, HEADER, "Bearer " + key]


def main():
    argv = frontend_argv(sys.argv, os.environ)
    # main.py imports its packages (engine, frontend, ...) from its own folder.
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
