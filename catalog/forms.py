"""Admin form pieces that turn operator-friendly input into catalog values."""

from django import forms
from django.core.exceptions import ValidationError

from catalog import pricing
from catalog.models import Price
from catalog.selectors import price_in_use
from catalog.validation import (
    PRICE_MONEY_TERMS,
    validate_feature,
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
            raise ValidationError(
                "Add a TIERED price from the Prices page, where its tiers are edited."
            )
        return data
