"""Admin form pieces that turn operator-friendly input into catalog values."""

from decimal import InvalidOperation

from django import forms
from django.core.exceptions import ValidationError

from catalog import pricing
from catalog.models import Meter, Price
from catalog.selectors import price_in_use, terms_example
from catalog.validation import (
    PRICE_MONEY_TERMS,
    validate_feature,
    validate_price,
    validate_price_change,
    validate_price_delete,
    validate_price_tiers,
)


class FiltersField(forms.CharField):
    """Meter filters as text, one per line: ``key: value one, value two``."""

    widget = forms.Textarea(
        attrs={"rows": 3, "placeholder": "model: OpenAI O1\nprompt_type: input"}
    )

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text",
            "One filter per line, as key: value, value. An event must match every line, "
            "and any one value on a line.",
        )
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(f"{f['key']}: {', '.join(f['values'])}" for f in value)
        return value

    def to_python(self, value):
        filters = []
        for number, line in enumerate((value or "").splitlines(), start=1):
            if not line.strip():
                continue
            key, colon, values = line.partition(":")
            if not colon or not key.strip():
                raise ValidationError(f"Line {number}: write it as key: value, value.")
            filters.append(
                {"key": key.strip(), "values": [v.strip() for v in values.split(",") if v.strip()]}
            )
        return filters


class MeterInlineFormSet(forms.BaseInlineFormSet):
    """A metered feature has exactly one meter; other features have none."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        has_meter = any(f.cleaned_data and not f.cleaned_data.get("DELETE") for f in self.forms)
        try:
            validate_feature(type=self.instance.type, has_meter=has_meter)
        except ValidationError as error:
            raise ValidationError(error.message_dict["meter"]) from error


class TierInlineFormSet(forms.BaseInlineFormSet):
    """Checks the tier set as a whole, in the order entered, with the catalog's own rules."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        rows = [
            f.cleaned_data
            for f in self.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE")
        ]
        tiers = [
            pricing.Tier(
                up_to=r.get("up_to"),
                unit_amount=r.get("unit_amount"),
                flat_amount=r.get("flat_amount"),
            )
            for r in rows
        ]
        try:
            if not self.instance._state.adding:
                _refuse_frozen_changes(price=self.instance, after={"tiers": tiers})
            validate_price_tiers(billing_model=self.instance.billing_model, tiers=tiers)
        except ValidationError as error:
            raise ValidationError(error.messages) from error


def _refuse_frozen_changes(*, price: Price, after: dict) -> None:
    """``before`` is read off ``price``, whose tiers always come from the database."""
    validate_price_change(in_use=price_in_use(price=price), before=price.money_terms(), after=after)


class FrozenPriceForm(forms.ModelForm):
    """Refuses changes to the money terms of a price billed on invoices."""

    def clean(self):
        data = super().clean()
        if not self.instance._state.adding:
            # clean() runs before the form writes its values onto the instance.
            after = {name: data[name] for name in PRICE_MONEY_TERMS if name in data}
            _refuse_frozen_changes(price=self.instance, after=after)
        return data


class PlanPriceInlineFormSet(forms.BaseInlineFormSet):
    """A price billed on invoices cannot be deleted from its plan."""

    def clean(self):
        # Before Django's own check, which lists the protecting invoice lines but not why.
        for form in self.forms:
            if not form.cleaned_data.get("DELETE") or form.instance._state.adding:
                continue
            try:
                validate_price_delete(in_use=price_in_use(price=form.instance))
            except ValidationError as error:
                raise ValidationError(error.messages) from error
        super().clean()


class PlanPriceInlineForm(forms.ModelForm):
    def clean(self):
        data = super().clean()
        is_new = self.instance._state.adding
        if data.get("billing_model") == pricing.TIERED and is_new:
            raise ValidationError(TIERED_FROM_PRICE_PAGE)
        return data


# Help texts, in the operator's words. Forms carry them so that no migration is needed.
LOOKUP_KEY_HELP = (
    "A short, stable name your code can use for this {what} instead of its id, e.g. {example}. "
    "Lowercase letters, numbers and hyphens; no two {whats} share one."
)
FEATURE_HELP = {
    "lookup_key": LOOKUP_KEY_HELP.format(what="feature", whats="features", example="input-tokens")
}
PLAN_HELP = {
    "lookup_key": LOOKUP_KEY_HELP.format(what="plan", whats="plans", example="pro-monthly")
    + " Optional."
}
PRICE_HELP = {
    "lookup_key": LOOKUP_KEY_HELP.format(what="price", whats="prices", example="pro-input-tokens")
    + " Optional."
}
METER_HELP = {
    "multiplier": (
        "Only for SUM_WITH_MULTIPLIER: each event's value is multiplied by this before it is "
        "added up, e.g. 0.001 to count thousands."
    ),
    "reset_usage": (
        "BILLING_PERIOD: usage starts again from zero every billing period (the usual choice). "
        "NEVER: usage keeps adding up from the start of the subscription."
    ),
}
TIERED_FROM_PRICE_PAGE = (
    "A TIERED price is added on its own page, where its tiers are edited: save the plan, then "
    'use "Add a price to this plan" at the top of the plan\'s page.'
)


class PriceExampleForm(forms.Form):
    """The terms a worked example needs, read from an unsaved price form (or inline row)."""

    type = forms.ChoiceField(choices=Price.Type.choices, required=False)
    billing_model = forms.ChoiceField(label="Billing model", choices=Price.BillingModel.choices)
    amount = forms.DecimalField(max_digits=28, decimal_places=12)
    currency = forms.CharField(max_length=3)
    divide_by = forms.IntegerField(label="Divide by", required=False)
    round = forms.ChoiceField(choices=Price.Round.choices, required=False)
    free_units = forms.DecimalField(
        label="Free units", max_digits=28, decimal_places=12, required=False
    )
    tier_mode = forms.ChoiceField(choices=Price.TierMode.choices, required=False)
    meter = forms.ModelChoiceField(queryset=Meter.objects.select_related("feature"), required=False)
    id = forms.CharField(required=False)  # a saved price: its stored tiers, for the plan inline


class TierExampleForm(forms.Form):
    up_to = forms.DecimalField(max_digits=28, decimal_places=12, required=False)
    unit_amount = forms.DecimalField(max_digits=28, decimal_places=12, initial=0, required=False)
    flat_amount = forms.DecimalField(max_digits=28, decimal_places=12, initial=0, required=False)


TierExampleFormSet = forms.formset_factory(TierExampleForm, extra=0, can_delete=True)

QUANTITY = forms.DecimalField(max_digits=28, decimal_places=12, min_value=0, required=False)


def _reasons(form: forms.BaseForm) -> list[str]:
    return [
        f"{form.fields[name].label or name.replace('_', ' ').capitalize()}: {message}"
        if name in form.fields
        else message
        for name, messages in form.errors.items()
        for message in messages
    ]


def _example_tiers(data, form: PriceExampleForm) -> tuple[list[pricing.Tier], list[str]]:
    if "tiers-TOTAL_FORMS" not in data:  # the plan's inline: tiers stay as stored
        if form.cleaned_data["billing_model"] != pricing.TIERED:
            return [], []
        price = Price.objects.filter(pk=form.cleaned_data["id"]).first()
        return ([t.as_tier() for t in price.tiers.all()] if price else []), []
    formset = TierExampleFormSet(data, prefix="tiers")
    if not formset.is_valid():
        reasons = [r for f in formset.forms for r in _reasons(f)]
        return [], reasons + list(formset.non_form_errors())
    rows = [
        f.cleaned_data
        for index, f in enumerate(formset.forms)
        if (index < formset.initial_form_count() or f.has_changed())
        and not f.cleaned_data.get("DELETE")
    ]
    zero = pricing.ZERO
    return [
        pricing.Tier(
            up_to=r.get("up_to"),
            unit_amount=zero if r.get("unit_amount") is None else r["unit_amount"],
            flat_amount=zero if r.get("flat_amount") is None else r["flat_amount"],
        )
        for r in rows
    ], []


def price_example_from_form(data, *, prefix: str = "") -> tuple[str, bool]:
    """A worked example for the price typed into ``data`` (``prefix`` names an inline row),
    or the reasons there is none yet. Returns ``(text, is_example)``."""
    form = PriceExampleForm(data, prefix=prefix or None)
    try:
        quantity = QUANTITY.clean(data.get("example_quantity", "").strip())
    except ValidationError as error:
        return f"Example quantity: {' '.join(error.messages)}", False
    if not form.is_valid():
        return " ".join(_reasons(form)), False
    values = form.cleaned_data
    model = values["billing_model"]
    if model == pricing.TIERED and prefix and not values["id"]:
        return TIERED_FROM_PRICE_PAGE, False
    tiers, reasons = _example_tiers(data, form)
    if reasons:
        return " ".join(reasons), False
    price_type = values["type"] or Price.Type.USAGE
    terms = pricing.Terms(
        billing_model=model,
        amount=values["amount"],
        divide_by=values["divide_by"],
        round=values["round"] or pricing.ROUND_UP,
        free_units=values["free_units"] or pricing.ZERO,
        tier_mode=values["tier_mode"] or pricing.VOLUME,
        tiers=tuple(tiers),
    )
    try:
        # The catalog's own rules; the meter is not needed for an example.
        validate_price(
            type=price_type,
            billing_model=model,
            amount=terms.amount,
            currency=values["currency"],
            has_meter=price_type == Price.Type.USAGE,
            divide_by=terms.divide_by,
            free_units=terms.free_units,
        )
        validate_price_tiers(billing_model=model, tiers=terms.tiers)
    except ValidationError as error:
        return " ".join(error.messages), False
    feature = values["meter"].feature if values["meter"] else None
    try:
        text = terms_example(
            terms,
            currency=values["currency"].lower(),
            quantity=quantity,
            fixed=price_type == Price.Type.FIXED,
            unit_singular=feature.unit_singular if feature else "",
            unit_plural=feature.unit_plural if feature else "",
        )
    except (InvalidOperation, OverflowError):  # past 28 significant digits
        return "The example amount is too large to work out; try a smaller quantity.", False
    return text, True
