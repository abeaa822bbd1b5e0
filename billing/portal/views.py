"""The customer portal: server-rendered pages, scoped to the signed-in user's customer."""

import csv
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import wraps

from django import forms
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing import budgets as budgets_service
from billing.charts import stacked_bars
from billing.models import BUDGET_PERCENTS, Budget
from billing.portal import selectors
from billing.portal import services as portal_services
from billing.wallet_selectors import block_remaining
from billing.wallets import PURCHASES
from catalog.money import format_money, format_quantity, round_money
from config.bounds import MAX_PAGE, day_check
from metering.fence import usage_fence_peek
from metering.models import Customer, Event
from metering.selectors import event_property_keys

VIEW_AS = "portal_view_as"
PAGE_SIZE = 50


def portal_view(view):
    """Sign-in required; the view gets the customer the signed-in user may see."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        customer_id = request.session.get(VIEW_AS) if may_view_as(request.user) else None
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
    """Signs out; staff viewing as a customer only leave view-as and keep their session."""
    if request.method == "POST" and request.session.get(VIEW_AS):
        return view_as_leave(request)
    return auth_views.LogoutView.as_view(next_page="portal:login")(request)


def view_as_leave(request):
    """Back to the admin page of the customer being viewed; nothing else changes."""
    customer_id = request.session.pop(VIEW_AS, None)
    if customer_id is None or not request.user.is_staff:
        return redirect("admin:index")
    return redirect("admin:metering_customer_change", customer_id)


# What a staff member needs to see a customer's portal, invoices and PDFs included.
VIEW_AS_PERMISSIONS = ("metering.view_customer", "billing.view_invoice")


def may_view_as(user) -> bool:
    return user.is_staff and user.has_perms(VIEW_AS_PERMISSIONS)


@require_POST
@staff_member_required
def view_as(request, customer_id):
    """Staff open a customer's portal read-only: a POST, so no other site can switch it."""
    if not may_view_as(request.user):
        raise PermissionDenied(
            "Viewing a customer's portal needs view access to customers and invoices."
        )
    customer = get_object_or_404(Customer, pk=customer_id)
    request.session[VIEW_AS] = customer.pk
    return redirect("portal:home")


def _live_context(customer) -> dict:
    subscription = selectors.portal_subscription(customer)
    invoice = selectors.proposed_invoice(subscription)
    usage = selectors.feature_usage(invoice) if invoice is not None else []
    return {
        "subscription": subscription,
        "invoice": invoice,
        "usage": usage,
        "card": selectors.balance_card(customer, subscription),
        "ledger_stamp": selectors.ledger_stamp(customer),
        "budgets": selectors.customer_budgets(customer),
    }


MAX_RANGE_DAYS = 366


class RangeForm(forms.Form):
    """Which days the home page's charts show: this period, the last one, or chosen dates."""

    range = forms.ChoiceField(
        choices=[("this", "This period"), ("last", "Last period"), ("custom", "Custom dates")],
        required=False,
    )
    start = forms.DateField(required=False, label="From")
    end = forms.DateField(required=False, label="To")

    def clean_start(self):
        return _day(self.cleaned_data["start"])

    def clean_end(self):
        return _day(self.cleaned_data["end"])

    def clean(self):
        data = super().clean()
        if data.get("range") != "custom" or self.errors:
            return data
        start, end = data.get("start"), data.get("end")
        if start is None or end is None:
            raise forms.ValidationError("Custom dates need both From and To.")
        if end < start:
            raise forms.ValidationError("To must not be before From.")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise forms.ValidationError(f"Pick at most {MAX_RANGE_DAYS} days.")
        return data


def _charts(subscription, form: RangeForm) -> dict:
    """The days the form chose, their invoices, and charts of cost and usage per day."""
    choice = form.cleaned_data.get("range") or "this"
    if choice == "custom":
        first, last = form.cleaned_data["start"], form.cleaned_data["end"]
        invoices = selectors.subscription_invoices(
            subscription=subscription, first=first, last=last
        )
    else:
        invoice = (
            selectors.previous_invoice(subscription)
            if choice == "last"
            else selectors.proposed_invoice(subscription)
        )
        if invoice is None:
            return {"range": choice, "no_period": True}
        invoices = [invoice]
        first, last = selectors.period_days(invoice)
    figures = selectors.daily_figures(
        subscription=subscription, invoices=invoices, first=first, last=last
    )
    labels = [f"{day:%b} {day.day}" for day in figures.days]
    span = f"{first:%b} {first.day}, {first.year} – {last:%b} {last.day}, {last.year}"
    return {
        "range": choice,
        "figures": figures,
        "span": span,
        "cost_chart": stacked_bars(
            labels=labels,
            series=figures.cost,
            fmt=lambda value: format_money(value, figures.currency),
            caption=f"Cost per day, {span}",
        ),
        "usage_chart": stacked_bars(
            labels=labels,
            series=figures.usage,
            fmt=format_quantity,
            caption=f"Usage per day, {span}",
        ),
    }


@portal_view
def home(request, customer):
    live = _live_context(customer)
    form = RangeForm(request.GET or {"range": "this"})
    context = {"customer": customer, "form": form, **live}
    if form.is_valid() and live["subscription"] is not None:
        context.update(_charts(live["subscription"], form))
    return render(request, "portal/home.html", context, status=400 if form.errors else 200)


@portal_view
def live(request, customer):
    """The home page's live panel; 204 (htmx keeps the page) when nothing was recomputed."""
    subscription = selectors.portal_subscription(customer)
    invoice = selectors.proposed_invoice(subscription)
    stamp = invoice.last_computed_at.isoformat() if invoice and invoice.last_computed_at else ""
    ledger = selectors.ledger_stamp(customer)
    if request.GET.get("since") == stamp and request.GET.get("ledger", ledger) == ledger:
        return HttpResponse(status=204)
    context = _live_context(customer)
    shown = _decimal(request.GET.get("total"))  # the total on the page: a cue when it moves
    changed = invoice is not None and shown is not None and shown != invoice.total
    return render(
        request, "portal/_live.html", {"customer": customer, "changed": changed, **context}
    )


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


def _page(request) -> int | None:
    """The ``page`` asked for, or None when it is not a whole number from 1 to MAX_PAGE."""
    raw = request.GET.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        return None
    return int(raw)


BAD_PAGE = f"page must be a whole number from 1 to {MAX_PAGE:,}."


@portal_view
def events(request, customer):
    form = EventFilter(request.GET or None, meters=selectors.portal_meters(customer))
    page = _page(request)
    if page is None:
        return HttpResponseBadRequest(BAD_PAGE)
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
            "events": [
                (event, mark, [(k, selectors.property_display(v)) for k, v in _properties(event)])
                for event, mark in zip(shown, marks, strict=True)
            ],
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
    # One column per property key of the whole export, gathered before the first row; events
    # stored meanwhile are left out, so none has a key the header lacks.
    exported = form.events(customer).filter(id__lte=usage_fence_peek())
    keys = event_property_keys(events=exported)

    def rows():
        header = ["event_id", "event_name", "timestamp"]
        yield writer.writerow(header + [f"properties.{k}" for k in keys] + ["billing"])
        for event in exported.iterator(chunk_size=2000):
            properties = event.properties if isinstance(event.properties, dict) else {}
            yield writer.writerow(
                [_cell(event.event_id), _cell(event.event_name), event.timestamp.isoformat()]
                + [_property_cell(properties[k]) if k in properties else "" for k in keys]
                + [str(selectors.event_mark(facts=facts, event=event))]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{customer.external_id}-events.csv"'
    return response


# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """Text the client sent, quoted so a spreadsheet shows it rather than running it."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _property_cell(value) -> str:
    text = selectors.property_csv(value)
    return _cell(text) if isinstance(value, str) else text  # -5 stays a number


def _decimal(text: str | None) -> Decimal | None:
    try:
        number = Decimal(text) if text else None
        return number if number is not None and number.is_finite() else None
    except InvalidOperation:
        return None


def _day(day):
    if day is not None:
        day_check(day)
    return day


def _properties(event) -> list[tuple[str, object]]:
    properties = event.properties if isinstance(event.properties, dict) else {}
    return sorted(properties.items())


@portal_view
def invoices(request, customer):
    return render(
        request,
        "portal/invoices.html",
        {"customer": customer, "invoices": selectors.customer_invoices(customer)},
    )


@portal_view
def credits(request, customer):
    """The ledger of the customer's wallets, newest first, 50 entries a page."""
    page = _page(request)
    if page is None:
        return HttpResponseBadRequest(BAD_PAGE)
    offset = (page - 1) * PAGE_SIZE
    rows = list(selectors.customer_ledger(customer)[offset : offset + PAGE_SIZE + 1])
    bought = None
    if key := request.GET.get("purchase"):  # just bought: say what happens next
        bought = (
            selectors.customer_ledger(customer)
            .filter(pk=key[:40], transaction_reason__in=PURCHASES, invoice__isnull=False)
            .first()
        )
    subscription = selectors.portal_subscription(customer)
    return render(
        request,
        "portal/credits.html",
        {
            "customer": customer,
            "card": selectors.balance_card(customer, subscription),
            "entries": [
                (e, block_remaining(e), selectors.REASON_LABELS[e.transaction_reason])
                for e in rows[:PAGE_SIZE]
            ],
            "page": page,
            "has_next": len(rows) > PAGE_SIZE,
            "bought": bought,
            "now": timezone.now(),
        },
    )


MAX_PURCHASE = Decimal(1_000_000)  # credits in one purchase


class BuyCreditsForm(forms.Form):
    credits = forms.DecimalField(
        min_value=Decimal("0.01"),
        max_value=MAX_PURCHASE,
        max_digits=19,
        decimal_places=12,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    # Made when the form is shown: submitting the same form twice buys once.
    idempotency_key = forms.RegexField(regex=r"^[0-9a-f]{32}$", widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["idempotency_key"] = uuid.uuid4().hex


@portal_view
def credits_buy(request, customer):
    """An invoiced purchase of credits into the signed-in customer's own wallet: the wallet is
    never taken from the request."""
    if request.portal["read_only"]:
        raise PermissionDenied("Viewing as a customer is read-only.")
    form = BuyCreditsForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            block = portal_services.credits_buy(customer=customer, **form.cleaned_data)
        except ValidationError as error:
            on_amount = getattr(error, "error_dict", {}).get("credits_to_add")
            form.add_error(*(("credits", on_amount) if on_amount else (None, error.messages)))
        else:
            return redirect(f"{reverse('portal:credits')}?purchase={block.pk}")
    subscription = selectors.portal_subscription(customer)
    return render(
        request,
        "portal/credits_buy.html",
        {
            "customer": customer,
            "form": form,
            "card": selectors.balance_card(customer, subscription),
            "currency": subscription.currency if subscription else None,
        },
        status=400 if form.errors else 200,
    )


MAX_BUDGET = Decimal(1_000_000_000)


class BudgetForm(forms.Form):
    """A budget for the account ("") or one of the plan's features, in the subscription's
    currency."""

    scope = forms.ChoiceField(label="For", required=False)
    amount = forms.DecimalField(
        label="Monthly budget",
        min_value=Decimal("0.01"),
        max_value=MAX_BUDGET,
        max_digits=13,
        decimal_places=3,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    alert_percents = forms.TypedMultipleChoiceField(
        label="Email me at",
        choices=[(p, f"{p}%") for p in BUDGET_PERCENTS],
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    hard_cap = forms.BooleanField(label="Stop use at 100% (hard cap)", required=False)

    def __init__(self, *args, features, currency, **kwargs):
        super().__init__(*args, **kwargs)
        self.features = {feature.pk: feature for feature in features}
        self.currency = currency
        self.fields["scope"].choices = [("", "The whole account")] + [
            (feature.pk, feature.name) for feature in features
        ]

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount != round_money(amount, self.currency):
            raise ValidationError(
                f"Give the amount in whole {self.currency.upper()} minor units, "
                f"such as {format_money(Decimal('12.5'), self.currency)}."
            )
        return amount

    def clean_scope(self):
        return self.features.get(self.cleaned_data["scope"]) if self.cleaned_data["scope"] else None


def _budgets_page(request, customer, form, *, status=200, error=None):
    return render(
        request,
        "portal/budgets.html",
        {
            "customer": customer,
            "form": form,
            "error": error,
            "budgets": selectors.customer_budgets(customer),
        },
        status=status,
    )


def _budget_form(customer, data=None) -> BudgetForm:
    subscription = selectors.portal_subscription(customer)
    return BudgetForm(
        data,
        features=selectors.budget_features(subscription),
        currency=subscription.currency if subscription else "usd",
    )


@portal_view
def budgets(request, customer):
    """The customer's own budgets: set one for the account or a feature, or clear one."""
    if request.method != "POST":
        return _budgets_page(request, customer, _budget_form(customer))
    if request.portal["read_only"]:
        raise PermissionDenied("Viewing as a customer is read-only.")
    form = _budget_form(customer, request.POST)
    if not form.is_valid():
        return _budgets_page(request, customer, form, status=400)
    try:
        budgets_service.budget_set(
            customer=customer,
            feature=form.cleaned_data["scope"],
            amount=form.cleaned_data["amount"],
            currency=form.currency,
            alert_percents=form.cleaned_data["alert_percents"],
            hard_cap=form.cleaned_data["hard_cap"],
            user=request.user,
        )
    except PermissionDenied as error:
        return _budgets_page(request, customer, form, status=400, error=str(error))
    return redirect("portal:budgets")


@require_POST
@portal_view
def budget_clear(request, customer, budget_id):
    if request.portal["read_only"]:
        raise PermissionDenied("Viewing as a customer is read-only.")
    budget = get_object_or_404(Budget, pk=budget_id, customer=customer)
    try:
        budgets_service.budget_clear(budget=budget)
    except PermissionDenied as error:
        return _budgets_page(
            request, customer, _budget_form(customer), status=400, error=str(error)
        )
    return redirect("portal:budgets")


# --- password reset, by Django's own views --------------------------------------------


class PortalPasswordResetForm(auth_forms.PasswordResetForm):
    """Only portal users get a link: a staff-only account is reset in the admin, not here.
    Unknown addresses get the same answer as known ones."""

    def get_users(self, email):
        return (user for user in super().get_users(email) if hasattr(user, "portal_account"))


class BadFormIs400:
    """A form sent back with its errors answers 400, as the portal's other pages do."""

    def form_invalid(self, form):
        response = super().form_invalid(form)
        response.status_code = 400
        return response


class PasswordResetView(BadFormIs400, auth_views.PasswordResetView):
    form_class = PortalPasswordResetForm
    template_name = "portal/password_reset_form.html"
    email_template_name = "portal/password_reset_email.txt"
    subject_template_name = "portal/password_reset_subject.txt"
    success_url = reverse_lazy("portal:password-reset-sent")


class PasswordResetSentView(auth_views.PasswordResetDoneView):
    template_name = "portal/password_reset_sent.html"


class PasswordResetConfirmView(BadFormIs400, auth_views.PasswordResetConfirmView):
    template_name = "portal/password_reset_confirm.html"
    success_url = reverse_lazy("portal:password-reset-complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "portal/password_reset_complete.html"
