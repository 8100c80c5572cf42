"""Field errors worded as apimachinery's ``field.Error`` prints them, and the small
checks (``IsDNS1123Label``, ``IsValidPortNum``, label selectors, ...) that kube-apiserver's
validation builds on (``k8s.io/apimachinery/pkg/util/validation``)."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from durapod.dev.apiserver import metadata

Obj = dict[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: its type (``FieldValueInvalid``), path and printed body."""

    reason: str
    field: str
    body: str

    def cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.body, "field": self.field}


def shown(value: Any) -> str:
    """A bad value as ErrorBody prints it: strings quoted (%q), numbers and booleans
    bare, anything else as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _with_detail(text: str, detail: str) -> str:
    return f"{text}: {detail}" if detail else text


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(
        "FieldValueInvalid", path, _with_detail(f"Invalid value: {shown(value)}", detail)
    )


def required(path: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", path, _with_detail("Required value", detail))


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", path, _with_detail("Forbidden", detail))


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError("FieldValueDuplicate", path, f"Duplicate value: {shown(value)}")


def not_found(path: str, value: Any) -> FieldError:
    return FieldError("FieldValueNotFound", path, f"Not found: {shown(value)}")


def not_supported(path: str, value: Any, supported: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(json.dumps(v) for v in supported)
    return FieldError(
        "FieldValueNotSupported",
        path,
        _with_detail(f"Unsupported value: {shown(value)}", detail if supported else ""),
    )


def too_long(path: str, limit: int) -> FieldError:
    unit = "byte" if limit == 1 else "bytes"
    return FieldError("FieldValueTooLong", path, f"Too long: may not be more than {limit} {unit}")


def causes(found: list[FieldError]) -> list[dict[str, str]]:
    """The Status causes, without repeats (``ToAggregate`` drops identical messages)."""
    seen: set[str] = set()
    out = []
    for err in found:
        text = f"{err.field}: {err.body}"
        if text not in seen:
            seen.add(text)
            out.append(err.cause())
    return out


# -- names -------------------------------------------------------------------------------

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(f"^{_LABEL}$")
_SUBDOMAIN = f"{_LABEL}(\\.{_LABEL})*"
_SUBDOMAIN_RE = re.compile(f"^{_SUBDOMAIN}$")
_DNS1035 = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_RE = re.compile(f"^{_DNS1035}$")
_CONFIG_KEY = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_RE = re.compile(f"^{_CONFIG_KEY}$")
_PERCENT_RE = re.compile("^[0-9]+%$")


def regex_error(message: str, pattern: str, *examples: str) -> str:
    """apimachinery's RegexError."""
    if not examples:
        return f"{message} (regex used for validation is '{pattern}')"
    shown_examples = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown_examples}regex used for validation is '{pattern}')"


def max_len(limit: int) -> str:
    return f"must be no more than {limit} characters"


def dns_label(value: str) -> list[str]:
    """IsDNS1123Label."""
    errs = [max_len(63)] if len(value) > 63 else []
    if not _LABEL_RE.match(value):
        if _SUBDOMAIN_RE.match(value):
            errs.append("must not contain dots")
        else:
            errs.append(
                regex_error(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character",
                    _LABEL,
                    "my-name",
                    "123-abc",
                )
            )
    return errs


def dns_subdomain(value: str) -> list[str]:
    """IsDNS1123Subdomain."""
    errs = [max_len(253)] if len(value) > 253 else []
    if not _SUBDOMAIN_RE.match(value):
        errs.append(
            regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                _SUBDOMAIN,
                "example.com",
            )
        )
    return errs


def dns1035_label(value: str) -> list[str]:
    """IsDNS1035Label (Service names)."""
    errs = [max_len(63)] if len(value) > 63 else []
    if not _DNS1035_RE.match(value):
        errs.append(
            regex_error(
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character",
                _DNS1035,
                "my-name",
                "abc-123",
            )
        )
    return errs


def path_segment(value: str) -> list[str]:
    """IsValidPathSegmentName (RBAC names)."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in "/%" if c in value]


def config_key(value: str) -> list[str]:
    """IsConfigMapKey (ConfigMap and Secret keys)."""
    errs = [max_len(253)] if len(value) > 253 else []
    if not _CONFIG_KEY_RE.match(value):
        errs.append(
            regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                _CONFIG_KEY,
                "key.name",
                "KEY_NAME",
                "key-name",
            )
        )
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def port_number(port: Any) -> list[str]:
    """IsValidPortNum."""
    return [] if isinstance(port, int) and 1 <= port <= 65535 else [range_error(1, 65535)]


def port_name(name: str) -> list[str]:
    """IsValidPortName."""
    errs = [max_len(15)] if len(name) > 15 else []
    if not re.match("^[-a-z0-9]+$", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def range_error(low: int, high: int) -> str:
    return f"must be between {low} and {high}, inclusive"


def valid_ip(path: str, value: str) -> list[FieldError]:
    """IsValidIP."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return [
            invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        ]
    return []


def names(path: str, value: str, check: Any) -> list[FieldError]:
    return [invalid(path, value, msg) for msg in check(value)]


def non_negative(path: str, value: Any) -> list[FieldError]:
    """ValidateNonnegativeField."""
    if isinstance(value, int) and value < 0:
        return [invalid(path, value, "must be greater than or equal to 0")]
    return []


def port_or_name(path: str, port: Any) -> list[FieldError]:
    """ValidatePortNumOrName (probe ports, Service targetPort)."""
    if isinstance(port, str):
        return [invalid(path, port, msg) for msg in port_name(port)]
    return [invalid(path, port, msg) for msg in port_number(port)]


def int_or_percent(path: str, value: Any, at_most_100: bool = True) -> list[FieldError]:
    """ValidatePositiveIntOrPercent and (unless told not to) IsNotMoreThan100Percent."""
    if isinstance(value, str):
        if not _PERCENT_RE.match(value):
            return [
                invalid(
                    path,
                    value,
                    regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        "1%",
                        "93%",
                    ),
                )
            ]
        if at_most_100 and int(value[:-1]) > 100:
            return [invalid(path, value, "must not be greater than 100%")]
        return []
    return non_negative(path, value)


def int_or_percent_value(value: Any) -> int:
    if isinstance(value, str):
        return int(value[:-1]) if _PERCENT_RE.match(value) else 0
    return value if isinstance(value, int) else 0


# -- labels and selectors ----------------------------------------------------------------


def labels(path: str, values: Obj | None) -> list[FieldError]:
    """ValidateLabels (keys are qualified names, values label values)."""
    errs: list[FieldError] = []
    for key, value in sorted((values or {}).items()):
        errs += [invalid(path, key, msg) for msg in metadata.qualified_name(key)]
        errs += [invalid(path, value, msg) for msg in metadata.label_value(str(value))]
    return errs


def label_selector(path: str, selector: Obj | None) -> list[FieldError]:
    """ValidateLabelSelector."""
    if selector is None:
        return []
    errs = labels(f"{path}.matchLabels", selector.get("matchLabels"))
    for i, req in enumerate(selector.get("matchExpressions") or []):
        where = f"{path}.matchExpressions[{i}]"
        operator, values = req.get("operator", ""), req.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                errs.append(
                    required(
                        f"{where}.values", "must be specified when `operator` is 'In' or 'NotIn'"
                    )
                )
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.append(
                    forbidden(
                        f"{where}.values",
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        else:
            errs.append(invalid(f"{where}.operator", operator, "not a valid selector operator"))
        key = req.get("key", "")
        errs += [invalid(f"{where}.key", key, msg) for msg in metadata.qualified_name(key)]
        for j, value in enumerate(values):
            errs += [
                invalid(f"{where}.values[{j}]", value, msg)
                for msg in metadata.label_value(str(value))
            ]
    return errs


def selector_matches(selector: Obj, target: Obj | None) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects ``target``."""
    target = target or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if target.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or []:
        key, values = req.get("key"), req.get("values") or []
        operator = req.get("operator")
        if operator == "In" and target.get(key) not in values:
            return False
        if operator == "NotIn" and key in target and target[key] in values:
            return False
        if operator == "Exists" and key not in target:
            return False
        if operator == "DoesNotExist" and key in target:
            return False
    return True
