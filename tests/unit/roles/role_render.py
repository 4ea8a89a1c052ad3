# SPDX-License-Identifier: Apache-2.0
"""Shared by the role tests here: render a role's template with Ansible as the role renders it
(<folder>/render.yml on <folder>/inventory.yml), and skip where the checker is missing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def render(folder, out, **extra_vars):
    """Runs <folder>/render.yml with out= and every extra variable as -e; returns out."""
    args = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(HERE / folder / "inventory.yml"),
            str(HERE / folder / "render.yml"), "-e", f"out={out}"]
    for key, value in extra_vars.items():
        args += ["-e", yaml.safe_dump({key: value}, default_flow_style=True).strip()]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".ansible" / "collections"))
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def checker(command, package):
    """(path of command or None, a pytest mark skipping the module where it is missing outside CI)."""
    path = shutil.which(command)
    return path, pytest.mark.skipif(
        path is None and os.environ.get("CI") != "true",
        reason=f"{command} missing: apt-get install {package} (the test command installs it)")


GATEWAY_FILES = ("/etc/haproxy/gateway-api-keys.lst", "/etc/haproxy/certs/gateway.pem",
                 "/etc/haproxy/gateway-openai-server-key.map")


def gateway_config_here(config, folder):
    """The gateway role's haproxy.cfg made runnable on this machine:
    the files it refers to, its chroot and admin socket moved under folder, no syslog, no user switch."""
    for original in GATEWAY_FILES:
        config = config.replace(original, str(Path(folder) / Path(original).name))
    config = config.replace("chroot /var/lib/haproxy", f"chroot {folder}").replace("log /dev/log local0", "")
    config = config.replace("/run/haproxy/admin.sock", str(Path(folder) / "admin.sock"))
    return config.replace("    user haproxy\n    group haproxy\n", "")
