from django import forms

from reporting.tables import TABLE_KEYS


class ReportFilterForm(forms.Form):
    """The report's filters; every field is optional and the defaults give the whole
    history of every published version for the journey's first conversion."""

    conversion = forms.ChoiceField(label="Conversion", required=False)
    start = forms.DateField(
        label="Enrolled from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label="Enrolled until", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    versions = forms.TypedMultipleChoiceField(
        label="Versions", coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    baseline = forms.TypedChoiceField(
        label="Baseline", coerce=int, required=False, empty_value=None
    )
    attribution = forms.ChoiceField(
        label="Credit conversions to",
        required=False,
        choices=[
            ("last_sent", "Last message sent"),
            ("last_opened", "Last message opened"),
            ("last_clicked", "Last message clicked"),
        ],
    )

    def __init__(self, data=None, *, conversions, version_numbers):
        super().__init__(data)
        self.fields["conversion"].choices = [(c.key, c.name) for c in conversions]
        version_choices = [(n, f"v{n}") for n in version_numbers]
        self.fields["versions"].choices = version_choices
        self.fields["baseline"].choices = [("", "Lowest version")] + version_choices
        # With no filter the report covers every version; the boxes say so.
        self.fields["versions"].initial = list(version_numbers)

    def clean(self):
        # Dates are checked with the rest of the filters in selectors.report_context, which
        # the API shares.
        data = super().clean()
        baseline, versions = data.get("baseline"), data.get("versions")
        if baseline and versions and baseline not in versions:
            self.add_error("baseline", "The baseline must be one of the versions shown.")
        return data


class CsvForm(forms.Form):
    table = forms.ChoiceField(choices=[(key, key) for key in TABLE_KEYS], required=False)
