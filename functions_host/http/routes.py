"""Route templates, ASP.NET style, as the Functions host compiles an HTTP trigger's `route`."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

_CONSTRAINTS: dict[str, str] = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "float": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?",
}
_PARAM = re.compile(r"^\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)((?::[^{}?=]+)*)(\?)?(?:=([^{}]*))?\}\Z")


class RouteError(ValueError):
    pass


@dataclass
class RouteTemplate:
    template: str
    regex: re.Pattern[str]
    checks: dict[str, list[Callable[[str], bool]]]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if not m:
            return None
        params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items() if v is not None}
        for name, checks in self.checks.items():
            if name in params and not all(check(params[name]) for check in checks):
                return None
        return params


def _constraint(spec: str, template: str) -> tuple[str | None, Callable[[str], bool] | None]:
    name, _, arg = spec.partition("(")
    arg = arg[:-1] if arg.endswith(")") else arg
    if name in _CONSTRAINTS:
        return _CONSTRAINTS[name], None
    if name in ("min", "max", "range"):
        nums = [int(a) for a in arg.split(",")]
        lo, hi = (
            (nums[0], None) if name == "min" else (None, nums[0]) if name == "max" else (nums[0], nums[1])
        )
        return r"-?\d+", lambda v: (lo is None or int(v) >= lo) and (hi is None or int(v) <= hi)
    if name in ("minlength", "maxlength", "length"):
        nums = [int(a) for a in arg.split(",")]
        if name == "minlength":
            return None, lambda v: len(v) >= nums[0]
        if name == "maxlength":
            return None, lambda v: len(v) <= nums[0]
        return None, (lambda v: nums[0] <= len(v) <= nums[1]) if len(nums) == 2 else (
            lambda v: len(v) == nums[0]
        )
    if name == "regex":
        pattern = re.compile(arg)
        return None, lambda v: pattern.search(v) is not None
    raise RouteError(
        f"route {template!r}: unknown constraint {name!r} (use int, long, bool, alpha, guid, float, "
        f"double, decimal, datetime, min, max, range, minlength, maxlength, length or regex)"
    )


def compile_route(template: str, prefix: str = "api") -> RouteTemplate:
    """Compile `/<prefix>/<template>`: `{x}`, `{x?}`, `{x:int}`, `{x:int?}`, `{x=default}`, `{*rest}`."""
    segments = [s for s in f"{prefix.strip('/')}/{template.strip('/')}".split("/") if s]
    pattern = ""
    checks: dict[str, list[Callable[[str], bool]]] = {}
    precedence: list[int] = []
    for index, seg in enumerate(segments):
        m = _PARAM.match(seg)
        if not m:
            if "{" in seg or "}" in seg:
                raise RouteError(
                    f"route {template!r}: segment {seg!r} mixes text and parameters; "
                    "use whole-segment parameters like {name}"
                )
            pattern += "/" + re.escape(urllib.parse.quote(seg, safe="!$&'()*+,;=:@-._~"))
            precedence.append(0)
            continue
        catch_all, name, constraints, optional, default = m.groups()
        value_re = "[^/]+"
        name_checks: list[Callable[[str], bool]] = []
        for spec in filter(None, constraints.split(":")):
            regex, check = _constraint(spec, template)
            value_re = regex or value_re
            if check:
                name_checks.append(check)
        if name_checks:
            checks[name] = name_checks
        if catch_all:
            if index != len(segments) - 1:
                raise RouteError(f"route {template!r}: a catch-all parameter must be the last segment")
            pattern += f"(?:/(?P<{name}>.*))?"
            precedence.append(4)
        elif optional or default is not None:
            if index != len(segments) - 1 and not all(
                _PARAM.match(s) and ("?" in s or "=" in s) for s in segments[index + 1 :]
            ):
                raise RouteError(
                    f"route {template!r}: an optional parameter can only be followed by optional ones"
                )
            pattern += f"(?:/(?P<{name}>{value_re}))?"
            precedence.append(3)
        else:
            pattern += f"/(?P<{name}>{value_re})"
            precedence.append(1 if name_checks or constraints else 2)
    return RouteTemplate(template, re.compile(rf"^{pattern}/?\Z", re.IGNORECASE), checks, tuple(precedence))
