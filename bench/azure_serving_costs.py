"""Azure serving: endpoints, deployments, instances and instance-hours a month for N tickers, per layout
(RETRAIN_ENDPOINTS: per-ticker, the shared default, groups of G), against Azure ML's documented quotas.

    python bench/azure_serving_costs.py [--tickers 1,10,100,500] [--group-size 100] [--hourly-price USD]
                                        [--vcpu-quota 24] [--swap-hours-per-week 1] [--write-figures]

Nothing here is measured: the figures are arithmetic on named inputs, and the endpoint count per layout
comes from the project's own layout code (`retrain.naming.parse_endpoint_groups` and `serving_target`
applied to N synthetic tickers), so the table follows what the code would create.

Sources (offline copies of Microsoft's pages, read 2026-12-06):
- "Manage and increase quotas and limits for resources with Azure Machine Learning",
  https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas (ms.date 01/27/2026), section
  "Azure Machine Learning online endpoints and batch endpoints": per subscription AND region, 100 endpoints,
  500 deployments, 20 deployments per endpoint, 50 instances per deployment (all adjustable on request);
  footnote 4 and "Virtual machine quota allocation for deployment": a deployment of n instances needs
  vCPU quota for ceil(1.2 n) instances (20 % reserved for upgrades, not billed unless used) on the VM
  sizes that are not exempt; section "Azure Machine Learning Compute": dedicated cores per region default
  to 24 to 300 depending on the subscription's offer (per VM family, adjustable).
- "Managed online endpoints SKU list",
  https://learn.microsoft.com/azure/machine-learning/reference-managed-online-endpoints-vm-sku-list
  (ms.date 10/18/2023): STANDARD_DS3_V2, family standardDSv2Family, 4 cores, not exempt from the 20 %.
- The project: one instance per deployment (`retrain/azureml/entities.py`, `instance_count=1`), VM size
  AZUREML_ENDPOINT_INSTANCE_TYPE (default Standard_DS3_v2), blue/green: a second deployment exists while an
  endpoint swaps (created at 0 %, canary, promoted, the old one deleted), one operation per endpoint at a time.

No price: no Microsoft price page for Standard_DS3_v2 was available offline, so `--hourly-price` has no
default; without it the table shows instance-hours only. Pass your region's pay-as-you-go price for the VM
size (Azure ML adds no surcharge to the VM for managed online endpoints per its pricing page; check it) to
get a cost column.

Counting (per layout and N): E endpoints; steady deployments = E x 1 (each serves one bundle); peak
deployments = 2 E (every endpoint in a swap at once: the quota must allow it, since any endpoint may swap
at any time); per endpoint at most 2 (of 20); instances = deployments x instances-per-deployment; vCPU
quota needed = deployments x ceil(1.2 x instances-per-deployment) x vCPUs of the size (peak: 2 E);
instance-hours a month = E x instances x (hours a month + swap hours a week x weeks a month). A layout is
flagged where a peak figure exceeds its quota.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from retrain.naming import parse_endpoint_groups, serving_target  # noqa: E402 (after the path fix)

FIGURES_FILE = REPO / "docs" / "azure.md"
BLOCK = "azure-serving-costs"
QUOTA_PAGE = "https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas (ms.date 2026-01-27)"
SKU_PAGE = (
    "https://learn.microsoft.com/azure/machine-learning/reference-managed-online-endpoints-vm-sku-list "
    "(ms.date 2023-10-18)"
)
HOURS_PER_WEEK = 24 * 7


@dataclass(frozen=True)
class Inputs:
    """What the table is computed from (the defaults are the documented values and the project's own)."""

    endpoint_quota: int = 100  # online endpoints per subscription and region (QUOTA_PAGE)
    deployment_quota: int = 500  # deployments per subscription and region (QUOTA_PAGE)
    deployments_per_endpoint_quota: int = 20  # (QUOTA_PAGE)
    vcpu_quota: int = 24  # VM family cores per region: the lowest documented default (24 to 300)
    instance_type: str = "Standard_DS3_v2"  # AZUREML_ENDPOINT_INSTANCE_TYPE's default
    vcpus_per_instance: int = 4  # Standard_DS3_v2 (SKU_PAGE)
    upgrade_reserve: float = 0.2  # quota for ceil(1.2 n) instances per deployment of n (QUOTA_PAGE)
    instances_per_deployment: int = 1  # retrain/azureml/entities.py
    hours_per_month: float = 730.0  # 24 x 365 / 12
    swap_hours_per_week: float = 1.0  # hours a week each endpoint runs its second deployment (assumed)
    hourly_price: float | None = None  # per instance-hour of the VM size; no documented default offline


@dataclass(frozen=True)
class Row:
    layout: str
    tickers: int
    endpoints: int
    deployments: int  # steady: one per endpoint
    peak_deployments: int  # every endpoint mid-swap
    peak_per_endpoint: int
    instances: int  # steady
    peak_instances: int
    peak_vcpu_quota: int  # vCPU quota the peak needs (with the upgrade reserve)
    instance_hours: float  # billed a month, swaps included
    over: tuple[str, ...]  # the quotas the peak exceeds, e.g. "endpoints 500 > 100"

    def monthly_cost(self, inputs: Inputs) -> float | None:
        return None if inputs.hourly_price is None else self.instance_hours * inputs.hourly_price


def layout_spec(layout: str, tickers: list[str]) -> str:
    """The RETRAIN_ENDPOINTS value of a layout: 'per-ticker', 'shared', or 'groups of G' (G tickers each)."""
    if layout in ("per-ticker", "shared"):
        return layout
    words = layout.split()
    if len(words) != 3 or words[:2] != ["groups", "of"] or not words[2].isdigit() or int(words[2]) < 1:
        raise ValueError(f"layout {layout!r}: send 'per-ticker', 'shared' or 'groups of G' (G >= 1)")
    size = int(words[2])
    chunks = [tickers[i : i + size] for i in range(0, len(tickers), size)]
    return ";".join(f"g{i + 1}=" + ",".join(chunk) for i, chunk in enumerate(chunks))


def endpoint_count(layout: str, n: int) -> int:
    """How many endpoints the layout creates for n tickers, through the code that names them."""
    tickers = [f"T{i:04d}" for i in range(n)]
    groups = parse_endpoint_groups(layout_spec(layout, tickers))
    return len({serving_target(t, groups) for t in tickers})


def row(layout: str, n: int, inputs: Inputs) -> Row:
    endpoints = endpoint_count(layout, n)
    per = inputs.instances_per_deployment
    reserved = math.ceil(round((1 + inputs.upgrade_reserve) * per, 9))  # ceil(1.2 x 1) = 2, not float noise
    peak_deployments = 2 * endpoints
    peak_vcpus = peak_deployments * reserved * inputs.vcpus_per_instance
    weeks = inputs.hours_per_month / HOURS_PER_WEEK
    hours = endpoints * per * (inputs.hours_per_month + inputs.swap_hours_per_week * weeks)
    checks = [
        ("endpoints", endpoints, inputs.endpoint_quota),
        ("deployments", peak_deployments, inputs.deployment_quota),
        ("deployments/endpoint", 2, inputs.deployments_per_endpoint_quota),
        ("vCPUs", peak_vcpus, inputs.vcpu_quota),
    ]
    return Row(
        layout=layout,
        tickers=n,
        endpoints=endpoints,
        deployments=endpoints,
        peak_deployments=peak_deployments,
        peak_per_endpoint=2,
        instances=endpoints * per,
        peak_instances=peak_deployments * per,
        peak_vcpu_quota=peak_vcpus,
        instance_hours=hours,
        over=tuple(f"{name} {value} > {quota}" for name, value, quota in checks if value > quota),
    )


def table(ns: list[int], layouts: list[str], inputs: Inputs) -> list[Row]:
    return [row(layout, n, inputs) for n in ns for layout in layouts]


def markdown(rows: list[Row], inputs: Inputs) -> str:
    priced = inputs.hourly_price is not None
    head = [
        "tickers",
        "layout",
        "endpoints",
        "deployments (peak)",
        "instances (peak)",
        f"vCPU quota, peak ({inputs.instance_type})",
        "instance-hours / month",
    ]
    if priced:
        head += ["USD / month", "USD / ticker / month"]
    head.append("over a quota (peak)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            str(r.tickers),
            r.layout,
            str(r.endpoints),
            f"{r.deployments} ({r.peak_deployments})",
            f"{r.instances} ({r.peak_instances})",
            str(r.peak_vcpu_quota),
            f"{r.instance_hours:,.0f}",
        ]
        cost = r.monthly_cost(inputs)
        if cost is not None:
            cells += [f"{cost:,.0f}", f"{cost / r.tickers:,.2f}"]
        cells.append("**" + "; ".join(r.over) + "**" if r.over else "no")
        lines.append("| " + " | ".join(cells) + " |")
    price = (
        f"{inputs.hourly_price:g} USD per instance-hour"
        if priced
        else "no price (instance-hours only; pass --hourly-price)"
    )
    lines += [
        "",
        f"Inputs: per subscription and region {inputs.endpoint_quota} endpoints, {inputs.deployment_quota} "
        f"deployments, {inputs.deployments_per_endpoint_quota} deployments per endpoint, {inputs.vcpu_quota} "
        f"vCPUs of the VM family; {inputs.instance_type} = {inputs.vcpus_per_instance} vCPUs, "
        f"{inputs.upgrade_reserve:.0%} upgrade reserve; {inputs.instances_per_deployment} instance(s) per "
        f"deployment; {inputs.hours_per_month:g} h a month, {inputs.swap_hours_per_week:g} h a week of swap "
        f"per endpoint; {price}. Peak = every endpoint swapping at once (2 deployments each).",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = Inputs()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", default="1,10,100,500", help="portfolio sizes N, comma-separated")
    parser.add_argument(
        "--group-size", type=int, default=100, help="tickers per endpoint in the groups layout"
    )
    parser.add_argument("--endpoint-quota", type=int, default=d.endpoint_quota)
    parser.add_argument("--deployment-quota", type=int, default=d.deployment_quota)
    parser.add_argument(
        "--deployments-per-endpoint-quota", type=int, default=d.deployments_per_endpoint_quota
    )
    parser.add_argument(
        "--vcpu-quota", type=int, default=d.vcpu_quota, help="your VM family's dedicated cores in the region"
    )
    parser.add_argument("--instance-type", default=d.instance_type)
    parser.add_argument("--vcpus-per-instance", type=int, default=d.vcpus_per_instance)
    parser.add_argument("--upgrade-reserve", type=float, default=d.upgrade_reserve, help="0 for exempt sizes")
    parser.add_argument("--instances-per-deployment", type=int, default=d.instances_per_deployment)
    parser.add_argument("--hours-per-month", type=float, default=d.hours_per_month)
    parser.add_argument("--swap-hours-per-week", type=float, default=d.swap_hours_per_week)
    parser.add_argument(
        "--hourly-price",
        type=float,
        default=None,
        help="USD per instance-hour of the VM size in your region (no default: adds the cost columns)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the GitHub markdown table")
    parser.add_argument(
        "--write-figures",
        dest="write_figures",
        action="store_true",
        help=f"also write the {BLOCK} block of {FIGURES_FILE.relative_to(REPO)}",
    )
    parser.add_argument("--figures-file", type=Path, default=FIGURES_FILE, help=argparse.SUPPRESS)
    return parser


def inputs_of(args: argparse.Namespace) -> Inputs:
    """The Inputs of the parsed flags; a bad value is an error that says what to send."""
    problems = []
    for name in (
        "endpoint_quota",
        "deployment_quota",
        "deployments_per_endpoint_quota",
        "vcpu_quota",
        "vcpus_per_instance",
        "instances_per_deployment",
        "group_size",
    ):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')}: send a whole number >= 1")
    if args.hours_per_month <= 0 or args.swap_hours_per_week < 0 or args.upgrade_reserve < 0:
        problems.append("--hours-per-month > 0, --swap-hours-per-week >= 0, --upgrade-reserve >= 0")
    if args.hourly_price is not None and args.hourly_price <= 0:
        problems.append("--hourly-price: send your region's price per instance-hour (> 0), or leave it out")
    if problems:
        raise ValueError("; ".join(problems))
    return Inputs(
        endpoint_quota=args.endpoint_quota,
        deployment_quota=args.deployment_quota,
        deployments_per_endpoint_quota=args.deployments_per_endpoint_quota,
        vcpu_quota=args.vcpu_quota,
        instance_type=args.instance_type,
        vcpus_per_instance=args.vcpus_per_instance,
        upgrade_reserve=args.upgrade_reserve,
        instances_per_deployment=args.instances_per_deployment,
        hours_per_month=args.hours_per_month,
        swap_hours_per_week=args.swap_hours_per_week,
        hourly_price=args.hourly_price,
    )


def sizes_of(args: argparse.Namespace) -> list[int]:
    try:
        ns = [int(n) for n in args.tickers.split(",")]
    except ValueError:
        raise ValueError(f"--tickers {args.tickers!r}: send whole numbers, e.g. 1,10,100,500") from None
    if not ns or min(ns) < 1:
        raise ValueError(f"--tickers {args.tickers!r}: send numbers >= 1, e.g. 1,10,100,500")
    return ns


def layouts_of(args: argparse.Namespace) -> list[str]:
    return ["per-ticker", "shared", f"groups of {args.group_size}"]


def settings_of(args: argparse.Namespace) -> dict[str, object]:
    """What the figures depend on (recorded in the block)."""
    inputs = inputs_of(args)
    recorded: dict[str, object] = {"tickers": sizes_of(args), "layouts": layouts_of(args)}
    recorded.update(vars(inputs))
    recorded["quota_source"] = QUOTA_PAGE
    return recorded


def DEFAULT_SETTINGS(block: str) -> dict[str, object]:  # noqa: N802 (the name readme_figures looks for)
    """What the block records when this script runs with its defaults."""
    return settings_of(build_parser().parse_args([]))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        inputs, ns = inputs_of(args), sizes_of(args)
    except ValueError as exc:
        parser.error(str(exc))
    rows = table(ns, layouts_of(args), inputs)
    md = markdown(rows, inputs)
    if args.write_figures:
        from bench.readme_figures import write_block

        defaults = build_parser().parse_args([])
        command = "bench/azure_serving_costs.py" + "".join(
            f" --{key.replace('_', '-')} {value}"
            for key, value in sorted(vars(args).items())
            if key not in ("write_figures", "markdown", "figures_file") and value != getattr(defaults, key)
        )
        write_block(args.figures_file, BLOCK, md, settings_of(args), command)
    if args.markdown or args.write_figures:
        print(f"settings: {json.dumps(settings_of(args))}\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
