"""IAM policy evaluation as AWS documents it, for the moto extension ``iam_policy_evaluation``.

moto 5.2 evaluates identity policies only by Action and Resource: it passes no
request context and skips conditions it has no values for, so every
conditional statement applies unconditionally (a tag-scoped Allow allows
everything, a conditional Deny denies everyone); its bucket-policy check has
the same flaw, and EC2 actions are checked against Resource "*" only. This module is the evaluation logic (pure functions, tested
in test_moto_extensions.py); ``moto_extensions`` feeds it the request context.

Covered, following the IAM policy evaluation logic of the AWS documentation:
an explicit Deny in any applicable policy wins; otherwise an Allow in an identity
policy or in the bucket policy allows (same account); otherwise implicit deny.
A statement applies when Action/NotAction, Resource/NotResource,
Principal/NotPrincipal (resource policies) and every Condition match.
Condition operators: String(Not)Equals, String(Not)Like, StringEqualsIgnoreCase,
Arn(Not)Like, Arn(Not)Equals, Bool, Null, Numeric*, with IfExists and the
ForAllValues:/ForAnyValue: set qualifiers.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

Context = Mapping[str, list[str]]


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    # IAM wildcards: * any run, ? one character; nothing else is special.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.I if ignore_case else 0) is not None


def _element_matches(statement: Mapping, positive: str, negative: str, value: str, ignore_case: bool) -> bool:
    if positive in statement:
        return any(_glob(p, value, ignore_case) for p in _as_list(statement[positive]))
    if negative in statement:
        return not any(_glob(p, value, ignore_case) for p in _as_list(statement[negative]))
    return True


def _principal_matches(statement: Mapping, principal_arn: str, account: str) -> bool:
    def matches(spec) -> bool:
        if spec == "*":
            return True
        for arn in _as_list(spec.get("AWS") if isinstance(spec, Mapping) else spec):
            if arn == "*" or arn == principal_arn or arn in (account, f"arn:aws:iam::{account}:root"):
                return True
            if _glob(arn, principal_arn):
                return True
        return False

    if "Principal" in statement:
        return matches(statement["Principal"])
    if "NotPrincipal" in statement:
        return not matches(statement["NotPrincipal"])
    return True


def _compare(base: str, expected: str, actual: str) -> bool:
    if base in ("StringEquals", "ArnEquals"):
        return actual == expected
    if base == "StringEqualsIgnoreCase":
        return actual.lower() == expected.lower()
    if base in ("StringLike", "ArnLike"):
        return _glob(expected, actual)
    if base == "Bool":
        return actual.lower() == str(expected).lower()
    if base.startswith("Numeric"):
        a, e = float(actual), float(expected)
        return {"NumericEquals": a == e, "NumericLessThan": a < e, "NumericLessThanEquals": a <= e,
                "NumericGreaterThan": a > e, "NumericGreaterThanEquals": a >= e}[base]
    raise ValueError(f"condition operator {base} is not supported by this evaluator")


NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals",
           "ArnNotLike": "ArnLike", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
           "NumericNotEquals": "NumericEquals"}


def condition_holds(operator: str, key: str, expected, context: Context) -> bool:
    qualifier, _, name = operator.rpartition(":")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    actual = _lookup(context, key)
    expected = [str(e) if not isinstance(e, bool) else str(e).lower() for e in _as_list(expected)]
    if name == "Null":
        return (actual is None) == (expected[0].lower() == "true")
    negated = name in NEGATED
    base = NEGATED.get(name, name)
    if actual is None:
        # A missing key: IfExists and negated operators hold, ForAllValues holds vacuously.
        return if_exists or negated or qualifier == "ForAllValues"
    if qualifier == "ForAllValues":
        result = all(any(_compare(base, e, a) for e in expected) for a in actual)
    else:  # ForAnyValue, and single-valued keys
        result = any(_compare(base, e, a) for e in expected for a in actual)
    return not result if negated else result


def _lookup(context: Context, key: str) -> list[str] | None:
    # Condition key names are case-insensitive (tag keys inside them are compared as given).
    lowered = key.lower()
    for name, values in context.items():
        if name.lower() == lowered:
            return _as_list(values)
    return None


def statement_applies(statement: Mapping, action: str, resource: str, context: Context,
                      principal_arn: str | None = None, account: str = "") -> bool:
    if not _element_matches(statement, "Action", "NotAction", action, ignore_case=True):
        return False
    if not _element_matches(statement, "Resource", "NotResource", resource, ignore_case=False):
        return False
    if principal_arn is not None and not _principal_matches(statement, principal_arn, account):
        return False
    for operator, block in (statement.get("Condition") or {}).items():
        for key, expected in block.items():
            if not condition_holds(operator, key, expected, context):
                return False
    return True


def decide(identity_policies: Iterable[Mapping], action: str, resource: str, context: Context,
           resource_policy: Mapping | None = None, principal_arn: str = "", account: str = "") -> str:
    """"allow", "deny" (explicit) or "implicit" (no statement allows)."""
    allowed = False
    sources = [(policy, None) for policy in identity_policies]
    if resource_policy:
        sources.append((resource_policy, principal_arn))
    for policy, principal in sources:
        for statement in _as_list(policy.get("Statement")):
            if not statement_applies(statement, action, resource, context, principal, account):
                continue
            if statement.get("Effect") == "Deny":
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit"

