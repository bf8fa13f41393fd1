"""Writes the configuration (sources, destinations, restore servers, alert
channels, plans) as YAML or JSON without secrets: catalog/config_as_code.py."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import config_as_code


class Command(BaseCommand):
    help = (
        "Writes sources, destinations, restore servers, alert channels and plans as YAML (or JSON) for "
        "import_config. No secret is written: each is named by an environment variable, or a file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
        parser.add_argument("--output", metavar="FILE", help="write here (mode 0600) rather than to standard output")
        parser.add_argument(
            "--secret-files",
            metavar="DIR",
            help="name each secret by a file in DIR ({file: DIR/...}) rather than an environment variable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = config_as_code.export_config(secret_files=options["secret_files"])
        text = config_as_code.dump(config, options["format"])
        if options["output"]:
            try:
                config_as_code.write_private(options["output"], text)
            except OSError as exc:
                raise CommandError(f"Cannot write {options['output']}: {exc.strerror}") from None
            self.stderr.write(f"Wrote {options['output']}.")
        else:
            self.stdout.write(text, ending="")
        # To standard error, so that standard output is the file alone.
        needed = config_as_code.secret_references(config)
        if needed:
            self.stderr.write("Before import_config, provide these secrets (the file holds none):")
            for where, what in needed:
                self.stderr.write(f"  {where}  ({what})")
