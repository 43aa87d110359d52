"""The `seal` command line: one module per command group, `cli.main` assembles them."""
