"""The customer portal: server-rendered pages, scoped to the signed-in user's customer."""

import csv
from datetime import UTC, datetime, time, timedelta
from functools import wraps

from django import forms
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from billing.portal import selectors
from config.bounds import MAX_PAGE, day_check
from metering.models import Customer, Event

VIEW_AS = "portal_view_as"
PAGE_SIZE = 50


def portal_view(view):
    """Sign-in required; the view gets the customer the signed-in user may see."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        customer_id = request.session.get(VIEW_AS) if request.user.is_staff else None
        if customer_id:
            customer, read_only = get_object_or_404(Customer, pk=customer_id), True
        else:
            account = getattr(request.user, "portal_account", None)
            if account is None:
                raise Http404("This account belongs to no customer.")
            customer, read_only = account.customer, False
        request.portal = {"customer": customer, "read_only": read_only}
        return view(request, customer, *args, **kwargs)

    return wrapper


class EmailLoginForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True}))

    def clean_username(self):
        return self.cleaned_data["username"].strip().lower()


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = EmailLoginForm
    redirect_authenticated_user = True


def logout_view(request):
    request.session.pop(VIEW_AS, None)
    return auth_views.LogoutView.as_view(next_page="portal:login")(request)


@staff_member_required
def view_as(request, customer_id):
    """Staff open a customer's portal read-only."""
    customer = get_object_or_404(Customer, pk=customer_id)
    request.session[VIEW_AS] = customer.pk
    return redirect("portal:home")


def _live_context(customer) -> dict:
    subscription = selectors.portal_subscription(customer)
    invoice = selectors.proposed_invoice(subscription)
    usage = []
    if invoice is not None:
        usage = selectors.feature_usage(invoice, subscription, timezone.now())
    return {"subscription": subscription, "invoice": invoice, "usage": usage}


@portal_view
def home(request, customer):
    return render(request, "portal/home.html", {"customer": customer, **_live_context(customer)})


@portal_view
def live(request, customer):
    """The home page's live panel; 204 (htmx keeps the page) when nothing was recomputed."""
    subscription = selectors.portal_subscription(customer)
    invoice = selectors.proposed_invoice(subscription)
    stamp = invoice.last_computed_at.isoformat() if invoice and invoice.last_computed_at else ""
    if request.GET.get("since") == stamp:
        return HttpResponse(status=204)
    return render(request, "portal/_live.html", {"customer": customer, **_live_context(customer)})


class EventFilter(forms.Form):
    feature = forms.ChoiceField(required=False)
    start = forms.DateField(required=False, label="From")
    end = forms.DateField(required=False, label="To")

    def __init__(self, *args, meters, **kwargs):
        super().__init__(*args, **kwargs)
        self.meters = {m.pk: m for m in meters}
        self.fields["feature"].choices = [("", "All features")] + [
            (m.pk, m.feature.name) for m in meters
        ]

    def clean_start(self):
        return _day(self.cleaned_data["start"])

    def clean_end(self):
        return _day(self.cleaned_data["end"])

    def events(self, customer):
        """The events chosen, or none when a filter is wrong (its error shows on the page)."""
        if self.is_bound and not self.is_valid():
            return Event.objects.none()
        data = self.cleaned_data if self.is_bound else {}
        start, end = data.get("start"), data.get("end")
        return selectors.customer_events(
            customer,
            meter=self.meters.get(data.get("feature")),
            start=datetime.combine(start, time(), UTC) if start else None,
            end=datetime.combine(end, time(), UTC) + timedelta(days=1) if end else None,
        )


@portal_view
def events(request, customer):
    form = EventFilter(request.GET or None, meters=selectors.portal_meters(customer))
    raw = request.GET.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        return HttpResponseBadRequest(f"page must be a whole number from 1 to {MAX_PAGE:,}.")
    page = int(raw)
    offset = (page - 1) * PAGE_SIZE
    rows = list(form.events(customer)[offset : offset + PAGE_SIZE + 1])
    shown = rows[:PAGE_SIZE]
    marks = selectors.event_marks(customer=customer, events=shown)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "portal/events.html",
        {
            "customer": customer,
            "form": form,
            "events": list(zip(shown, marks, strict=True)),
            "page": page,
            "has_next": len(rows) > PAGE_SIZE,
            "query": query.urlencode(),
        },
        status=400 if form.errors else 200,
    )


class _Echo:
    def write(self, value):
        return value


@portal_view
def events_csv(request, customer):
    form = EventFilter(request.GET or None, meters=selectors.portal_meters(customer))
    if form.is_bound and not form.is_valid():  # before streaming: a 200 cannot turn into a 400
        return HttpResponseBadRequest(form.errors.as_text(), content_type="text/plain")
    writer = csv.writer(_Echo())
    facts = selectors.billing_facts(customer=customer)

    def rows():
        yield writer.writerow(["event_id", "event_name", "timestamp", "properties", "billing"])
        for event in form.events(customer).iterator(chunk_size=2000):
            yield writer.writerow(
                [
                    event.event_id,
                    event.event_name,
                    event.timestamp.isoformat(),
                    _properties_text(event.properties),
                    str(selectors.event_mark(facts=facts, event=event)),
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{customer.external_id}-events.csv"'
    return response


def _day(day):
    if day is not None:
        day_check(day)
    return day


def _properties_text(properties: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in sorted(properties.items()))


@portal_view
def invoices(request, customer):
    return render(
        request,
        "portal/invoices.html",
        {"customer": customer, "invoices": selectors.customer_invoices(customer)},
    )
