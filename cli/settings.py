"""`seal config show`: the effective config (file + `--set` overrides, validated) as YAML."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from cli.common import ConfigOpt, SetOpt, app, console, guarded, read_config

config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
app.add_typer(config_app, name="config")

@config_app.command("show")
@guarded
def show(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
         section: Optional[str] = typer.Argument(None, help="Only this section, e.g. train or continual.")):
    """Print the config a command would run with: the file, then every --set applied, after validation."""
    data = read_config(config, set_).model_dump(mode="json")
    if section is not None:
        if section not in data:

            fail(f"no config section {section!r}; sections: {', '.join(sorted(data))}")
        data = {section: data[section]}
    console.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="", markup=False, highlight=False)
