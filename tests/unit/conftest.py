"""Make `ansible_collections.onprem.triton` importable for plain `pytest tests/unit`.

scripts/setup.sh links the checkout as .ansible/collections/ansible_collections/onprem/triton.
"""
import os
import sys

_COLLECTIONS = os.path.join(os.path.dirname(__file__), "..", "..", ".ansible", "collections")
if os.path.isdir(_COLLECTIONS) and os.path.abspath(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))
