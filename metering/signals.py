from django.dispatch import Signal

# Sent after a commit that stored new events, with ``external_customer_ids``.
# Billing listens to keep proposed invoices current; metering does not import billing.
usage_recorded = Signal()
