"""`envctl runs report`: one self-contained HTML page of runs (table, charts, records).

`runs` builds the page's content from records (pure), `charts` the Vega-Lite specs (pure data),
`page` the HTML with the vendored chart libraries inlined.
"""
