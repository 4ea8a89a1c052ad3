# SPDX-License-Identifier: Apache-2.0
"""Makes `ansible_collections.onprem.triton` importable in pytest: the checkout
is linked as .ansible/collections/ansible_collections/onprem/triton."""

import sys
from pathlib import Path

_COLLECTIONS = Path(__file__).resolve().parents[1] / ".ansible" / "collections"
if str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))
