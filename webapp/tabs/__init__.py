"""One module per tab of the app, each with the same parts: `Components` (its components, a dataclass),
`layout()` (builds them inside a `gr.Tab`), handlers (plain functions taking the `Explainer` first; tests call
them directly), the NamedTuples they return (field names = the components they fill), and `wire()` (its
events; components of other tabs are passed in by name)."""
