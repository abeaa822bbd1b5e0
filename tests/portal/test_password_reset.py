"""Portal password reset by email, through Django's own views."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from tests.factories import CustomerFactory, CustomerUserFactory

pytestmark = pytest.mark.django_db

NEW = "a-long-new-passphrase-42"


@pytest.fixture
def acme_user():
    return CustomerUserFactory(customer=CustomerFactory(external_id="acme")).user


def ask(client, email):
    return client.post(reverse("portal:password-reset"), {"email": email}, follow=True)


def link_in(message) -> str:
    return re.search(r"https?://[^/\s]+(/portal/password-reset/\S+/)", message.body).group(1)


def test_the_login_page_links_to_the_reset(client):
    page = client.get(reverse("portal:login")).content.decode()
    assert "Forgot password?" in page and reverse("portal:password-reset") in page


def test_reset_by_email_end_to_end(client, acme_user):
    answer = ask(client, "ACME@example.com")
    assert answer.redirect_chain[-1][0] == reverse("portal:password-reset-sent")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["acme@example.com"] and message.subject == "Reset your Tally password"
    form = client.get(link_in(message), follow=True)  # Django swaps the token for a session
    assert "Set a new password" in form.content.decode()
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": NEW, "new_password2": NEW}, follow=True
    )
    assert done.redirect_chain[-1][0] == reverse("portal:password-reset-complete")
    assert "Password set" in done.content.decode()
    signed_in = client.post(
        reverse("portal:login"), {"username": "acme@example.com", "password": NEW}
    )
    assert signed_in.status_code == 302 and signed_in.url == reverse("portal:home")
    again = client.get(link_in(message), follow=True)  # a link works once
    assert "This link has expired" in again.content.decode()


def test_a_weak_new_password_is_refused_with_the_reason(client, acme_user):
    ask(client, "acme@example.com")
    form = client.get(link_in(mail.outbox[0]), follow=True)
    answer = client.post(form.redirect_chain[-1][0], {"new_password1": "x", "new_password2": "x"})
    assert answer.status_code == 400 and "too short" in answer.content.decode()
    acme_user.refresh_from_db()
    assert acme_user.check_password("acme-demo")


def test_an_unknown_email_gets_the_same_answer_and_no_mail(client, acme_user):
    known = ask(client, "acme@example.com")
    mail.outbox.clear()
    unknown = ask(client, "nobody@example.com")
    assert unknown.redirect_chain == known.redirect_chain
    assert unknown.content == known.content
    assert mail.outbox == []


def test_a_staff_only_account_is_not_reset_through_the_portal(client):
    get_user_model().objects.create_user(
        "ops", email="ops@example.com", password="x", is_staff=True
    )
    answer = ask(client, "ops@example.com")
    assert answer.redirect_chain[-1][0] == reverse("portal:password-reset-sent")
    assert mail.outbox == []


def test_a_staff_member_who_is_also_a_portal_user_is_reset(client, acme_user):
    acme_user.is_staff = True
    acme_user.save()
    ask(client, "acme@example.com")
    assert len(mail.outbox) == 1


def test_a_bad_email_is_said_so(client):
    answer = client.post(reverse("portal:password-reset"), {"email": "not-an-email"})
    assert answer.status_code == 400 and "valid email" in answer.content.decode()
    assert mail.outbox == []
