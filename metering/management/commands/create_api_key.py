from django.core.management.base import BaseCommand

from metering.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key. The key is printed once, on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **options):
        key, raw = api_key_create(name=name)
        self.stdout.write(f"Created API key {key.name!r} ({key.prefix}…). Store it now:")
        self.stdout.write(raw)
