# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""The one error type of the collection's input checks: a bad input, naming the variable at fault.

The model catalog, the model repository and the release table each raise a subclass of it, so a
caller (the render action, a filter) catches one class and reports the variable the operator wrote."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class VariableError(ValueError):
    """str() reads "<variable>: <message>"; both parts are kept for callers that report them apart."""

    def __init__(self, variable, message):
        super(VariableError, self).__init__("%s: %s" % (variable, message))
        self.variable = variable
        self.message = message
