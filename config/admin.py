"""What every Tally admin page shares: plain numbers in forms, no empty rows on add forms."""

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db import models

# Filled in by the database: an add form would only show "-" for them.
UNSAVED = {"id", "created_at", "updated_at"}


class DecimalInput(forms.TextInput):
    """Shows ``3`` for a stored ``3.000000000000`` and ``0`` for ``0E-12``; the value saved
    is what was typed, so storage stays exact."""

    def __init__(self, attrs=None):
        super().__init__({"inputmode": "decimal", "class": "vTextField decimal", **(attrs or {})})

    def format_value(self, value):
        if isinstance(value, Decimal):
            return plain_decimal(value)
        return super().format_value(value)


def plain_decimal(value: Decimal) -> str:
    """A decimal as people write it, without separators: ``1000000``, ``0.000015``."""
    return format(value.normalize(), "f") if value.is_finite() else str(value)


DECIMAL_FIELDS = {models.DecimalField: {"widget": DecimalInput}}


def _without(fieldsets, names):
    kept = []
    for name, options in fieldsets:
        fields = []
        for entry in options.get("fields", ()):
            if isinstance(entry, list | tuple):
                entry = tuple(f for f in entry if f not in names)
                if not entry:
                    continue
            elif entry in names:
                continue
            fields.append(entry)
        if fields:
            kept.append((name, {**options, "fields": fields}))
    return kept


class ReadOnly:
    """For an admin or inline of rows Tally writes: shown, never added, changed or deleted
    by hand (actions may still write through services)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TallyAdmin(admin.ModelAdmin):
    formfield_overrides = DECIMAL_FIELDS

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        return fieldsets if obj is not None else _without(fieldsets, UNSAVED)


class TallyStackedInline(admin.StackedInline):
    formfield_overrides = DECIMAL_FIELDS


class TallyTabularInline(admin.TabularInline):
    formfield_overrides = DECIMAL_FIELDS
