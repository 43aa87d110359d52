"""The `seal` command line (typer: typed options, generated help, exit code 2 on usage errors). Each command
group lives in its own module and registers on `cli.common.app`; importing them here is the whole assembly."""
from cli import learning, service, rl, arc, vllm, settings  # noqa: F401  isort: skip (registration order = the order in --help)
from cli.common import app

if __name__ == "__main__":
    app()
