"""Offline replacement for the pip bootstrap script that ansible-test downloads.

ansible-test fetches `get-pip-<version>.py` from ci-files.testing.ansible.com, which
these machines cannot reach, and looks for it first in ~/.ansible/test/cache. Like
get-pip.py, this script takes pip-install arguments; it bootstraps pip from the copy
bundled with Python (ensurepip), then lets that pip install what was asked for
(`pip==<version>`, setuptools, wheel) from the package index.
"""
import subprocess
import sys


# Options of get-pip.py itself, not of pip install: get-pip adds setuptools and
# wheel unless told not to; this script installs only what is named.
GET_PIP_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main():
    pip_args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_OPTIONS]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + pip_args)


if __name__ == "__main__":
    main()
