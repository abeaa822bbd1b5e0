from django import template

from catalog.money import format_money, format_quantity, format_unit_price

register = template.Library()


@register.filter
def money(amount, currency):
    return format_money(amount, currency)


@register.filter
def unit_price(amount, currency):
    return format_unit_price(amount, currency)


@register.filter
def quantity(value):
    return format_quantity(value)
