"""Browser pages, one module per resource (sources, destinations, plans,
backups, ...; catalog/urls.py names them). Views stay short: forms validate,
services act. What the modules share is in common.py."""
