"""What a student sees: widgets (`widgets`, thin ipywidgets wiring) over pure plotting functions (`plots`). Nothing
outside `labkit.viz` and `labkit.lessons` imports from here."""
