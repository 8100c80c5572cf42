"""Object metadata checked as kube-apiserver checks it (apimachinery's ``ValidateLabels``,
``ValidateAnnotations`` and ``ValidateFinalizerName``), with its wording: label keys and
annotation keys are qualified names, label values at most 63 bytes of a pattern,
annotations at most 256 KiB in total, finalizers qualified names. Every write of every
kind passes here, so what a real server refuses (a run name too long for a label value)
is refused here too."""

from __future__ import annotations

import re
from typing import Any

_KEY = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_KEY_RE = re.compile(f"^{_KEY}$")
_VALUE = f"({_KEY})?"
_VALUE_RE = re.compile(f"^{_VALUE}$")
_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = f"{_LABEL}(\\.{_LABEL})*"
_SUBDOMAIN_RE = re.compile(f"^{_SUBDOMAIN}$")
KEY_ERROR = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{_KEY}')"
)
VALUE_ERROR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '{_VALUE}')"
)
SUBDOMAIN_ERROR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    f"regex used for validation is '{_SUBDOMAIN}')"
)
#: apimachinery's TotalAnnotationSizeLimitB.
ANNOTATIONS_MAX_BYTES = 256 * 1024
Cause = dict[str, str]


def qualified_name(value: str) -> list[str]:
    """apimachinery's IsQualifiedName: an optional DNS-subdomain prefix, '/', a name."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) > 2:
        return [
            f"a valid label key {KEY_ERROR} with an optional DNS subdomain prefix and '/' "
            "(e.g. 'example.com/MyName')"
        ]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix.encode()) > 253:
                errors.append("prefix part must be no more than 253 bytes")
            if not _SUBDOMAIN_RE.match(prefix):
                errors.append(f"prefix part {SUBDOMAIN_ERROR}")
    name = parts[-1]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name.encode()) > 63:
        errors.append("name part must be no more than 63 bytes")
    if not _KEY_RE.match(name):
        errors.append(f"name part {KEY_ERROR}")
    return errors


def label_value(value: str) -> list[str]:
    errors = []
    if len(value.encode()) > 63:
        errors.append("must be no more than 63 bytes")
    if not _VALUE_RE.match(value):
        errors.append(VALUE_ERROR)
    return errors


def _invalid(field: str, value: Any, message: str) -> Cause:
    shown = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return {
        "reason": "FieldValueInvalid",
        "field": field,
        "message": f'Invalid value: "{shown}": {message}',
    }


def problems(meta: dict[str, Any]) -> list[Cause]:
    """What a real API server refuses in ``meta``, as 422 causes (empty: nothing)."""
    causes: list[Cause] = []
    labels = meta.get("labels") or {}
    for key, value in sorted(labels.items()):
        causes += [_invalid("metadata.labels", key, m) for m in qualified_name(key)]
        causes += [_invalid("metadata.labels", value, m) for m in label_value(str(value))]
    annotations = meta.get("annotations") or {}
    for key in sorted(annotations):
        causes += [_invalid("metadata.annotations", key, m) for m in qualified_name(key.lower())]
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        causes.append(
            {
                "reason": "FieldValueTooLong",
                "field": "metadata.annotations",
                "message": f"Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes",
            }
        )
    for i, finalizer in enumerate(meta.get("finalizers") or []):
        field = f"metadata.finalizers[{i}]"
        causes += [_invalid(field, finalizer, m) for m in qualified_name(finalizer)]
    return causes
