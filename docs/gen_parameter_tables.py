"""Print the parameter tables of docs/user-guide/parameters.md (markdown) from the code.

Usage (from the repository root)::

    python docs/gen_parameter_tables.py > /tmp/tables.md            # parameter tables
    python docs/gen_parameter_tables.py --forcing > /tmp/forcing.md  # forcing table

and paste the output between the ``<!-- BEGIN/END GENERATED ... -->`` markers of
``docs/user-guide/parameters.md`` (or ``docs/user-guide/forcing.md``).  The tables come straight
from each model's ``ParameterSpace`` and from ``xproda.models.forcing.FORCING_SCHEMA``, so they
are exactly what the kernels use.
"""

from __future__ import annotations

import math
import sys

import xproda
from xproda.models.forcing import FORCING_SCHEMA

#: meaning of the process groups used by the post-DA analyses (spec §2.3, §3.2)
GROUP_TITLES = {
    "clm5": {
        "A": "transfer fractions between pools",
        "K": "baseline turnover times",
        "Xi": "environmental scalars",
        "V": "vertical transport",
        "I": "vertical input allocation",
    },
    "microbial": {
        "A": "microbial carbon use efficiency and DOC uptake",
        "K": "turnover and depolymerisation kinetics",
        "Xi": "environmental scalars",
        "V": "vertical transport",
        "I": "vertical input allocation",
        "E": "non-microbial carbon transfer fractions",
    },
}


def fmt(x) -> str:
    if x is None:
        return "–"
    x = float(x)
    if math.isnan(x):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.3g}"
    return f"{x:.4g}"


def units(u: str) -> str:
    return "–" if u == "1" else u


def table(model_name: str) -> str:
    model = xproda.get_model(model_name)
    space = model.parameters
    theta_default = space.default_normalized()
    lines = [
        f"### `{model_name}` ({len(space)} parameters)",
        "",
        "| # | name | group | min | max | transform | units | default | θ(default) | description |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(space, 1):
        td = theta_default[i - 1]
        td_txt = "–" if math.isnan(td) else f"{td:.3f}"
        if not math.isnan(td) and not 0 < td < 1:
            td_txt += " (outside prior)"
        lines.append(
            f"| {i} | `{p.name}` | {p.group} | {fmt(p.minimum)} | {fmt(p.maximum)} | "
            f"{p.transform} | {units(p.units)} | {fmt(p.default)} | {td_txt} | {p.description} |"
        )
    lines += ["", "Groups:", ""]
    for g, names in space.groups.items():
        title = GROUP_TITLES.get(model_name, {}).get(g, "")
        lines.append(f"- **{g}** ({title}): " + ", ".join(f"`{n}`" for n in names))
    return "\n".join(lines)


def forcing_table() -> str:
    lines = [
        "| name | shape | units | meaning | valid range | required |",
        "|---|---|---|---|---|---|",
    ]
    for v in FORCING_SCHEMA.values():
        shape = "[" + ", ".join(["n", *map(str, v.shape)]) + "]"
        lo = "−∞" if v.minimum is None else fmt(v.minimum)
        hi = "∞" if v.maximum is None else fmt(v.maximum)
        rng = f"{lo} … {hi}" + (" (integer)" if v.integer else "")
        req = "yes" if v.required else "no"
        lines.append(
            f"| `{v.name}` | `{shape}` | {units(v.units)} | {v.long_name} | {rng} | {req} |"
        )
    return "\n".join(lines)


def main() -> None:
    if "--forcing" in sys.argv[1:]:
        print(forcing_table())
    else:
        print("\n\n".join(table(name) for name in ("clm5", "microbial")))


if __name__ == "__main__":
    main()
