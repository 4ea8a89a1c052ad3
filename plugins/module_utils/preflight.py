# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""The reasons a failed check gave, one line per problem (pure helpers for the preflight filters)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def one_line(text):
    """Whitespace (new lines of a folded message included) collapsed to single spaces."""
    return " ".join(str(text).split())


def failure_messages(result):
    """Each problem in one task result: an assert's msg, each failed item of a loop, each
    argument_specs error, a module's msg (or its stderr)."""
    if not isinstance(result, dict):
        return [one_line(result)] if result else []
    if result.get("argument_errors"):
        return [one_line(error) for error in result["argument_errors"]]
    items = [item for item in result.get("results") or [] if isinstance(item, dict) and item.get("failed")]
    if items:
        return [line for item in items for line in failure_messages(item)]
    for key in ("msg", "stderr", "module_stderr"):
        if result.get(key):
            return [one_line(result[key])]
    if result.get("censored"):
        return ["a check of secret values failed (its output is hidden): " + one_line(result["censored"])]
    return ["failed without a message"]


def check_failures(results):
    """The message of each failed check among registered results, in the order given."""
    return [message for result in results or [] if isinstance(result, dict) and result.get("failed")
            for message in failure_messages(result)]
