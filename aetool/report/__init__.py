"""The HTML report: ``collect`` gathers what it shows into ``data.ReportData``,
``html`` builds the page from the ``sections``, and ``plots`` draws the pictures."""
