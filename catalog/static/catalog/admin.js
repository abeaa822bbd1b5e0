// Catalog admin pages: each part of a form shows only where it applies, and the live
// worked example (htmx) learns which plan inline row it belongs to. Without this script
// every part shows, and the example updates when the page is saved.
"use strict";
{
  // A part holding an error stays visible whatever it is set to.
  const show = (el, on) => {
    if (el) el.hidden = !on && !el.querySelector(".errorlist, .errornote");
  };

  function sync() {
    // Feature page: the meter box only for metered features.
    const type = document.getElementById("id_type");
    if (type && document.getElementById("feature_form")) {
      show(document.getElementById("meter-group"), type.value === "metered");
    }
    // Price page: tiers only for TIERED prices, package terms only for PACKAGE ones.
    const model = document.getElementById("id_billing_model");
    if (model && document.getElementById("price_form")) {
      show(document.getElementById("tiers-group"), model.value === "TIERED");
      document.querySelectorAll("fieldset.tally-tiered").forEach((f) => show(f, model.value === "TIERED"));
      document.querySelectorAll("fieldset.tally-package").forEach((f) => show(f, model.value === "PACKAGE"));
    }
    // Plan page: in each price row, package terms only for PACKAGE prices.
    document.querySelectorAll("#prices-group .inline-related").forEach((row) => {
      const select = row.querySelector('select[name$="-billing_model"]');
      if (select) show(row.querySelector(".form-row.field-divide_by"), select.value === "PACKAGE");
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    sync();
    document.addEventListener("change", sync);
    // A new plan inline row is a copy of the template row: htmx has not seen it yet.
    document.addEventListener("formset:added", (event) => {
      if (window.htmx) htmx.process(event.target);
      sync();
    });
    // A removed tier changes the example too.
    document.addEventListener("formset:removed", () => {
      document.getElementById("price_form")?.dispatchEvent(new Event("change"));
    });
    // The example endpoint reads one inline row's fields by its prefix, e.g. prices-0.
    document.body.addEventListener("htmx:configRequest", (event) => {
      const row = event.detail.elt.closest(".inline-related");
      if (row && /^prices-\d+$/.test(row.id)) event.detail.parameters.prefix = row.id;
    });
    // The meter picker (select2) changes the example's unit name.
    if (window.django && django.jQuery) {
      django.jQuery(document).on("select2:select select2:clear", (event) => {
        event.target.dispatchEvent(new Event("input", { bubbles: true }));
      });
    }
  });
}
