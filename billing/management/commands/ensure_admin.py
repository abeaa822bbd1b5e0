from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"
PASSWORD = "admin"


class Command(BaseCommand):
    help = "Create the local admin user if missing and print its login. Development only."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("ensure_admin is for development; use createsuperuser.")
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(PASSWORD)
            user.save()
        self.stdout.write(
            f"Admin: http://127.0.0.1:8000/admin/  user {USERNAME!r}, password "
            f"{PASSWORD if created or user.check_password(PASSWORD) else '(changed by you)'!r}"
        )
